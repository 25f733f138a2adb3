# cmake -DIN=SAMPLE -DOUT=FILE -DDATA_DIR=DIR -P packaged_config.cmake
# Writes OUT, the configuration the package installs: the sample IN (which
# documents every key) with its node.data_dir set to DIR.
file(READ "${IN}" text)
string(REGEX MATCHALL "\n  data_dir: [^\n]*" found "${text}")
list(LENGTH found n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "${IN}: expected one node.data_dir line, found ${n}")
endif()
string(REGEX REPLACE "\n  data_dir: [^\n]*" "\n  data_dir: ${DATA_DIR}" text "${text}")
file(WRITE "${OUT}"
  "# Installed by the ainode package. The service may write only in ${DATA_DIR}\n"
  "# (its StateDirectory): a data_dir elsewhere needs ReadWritePaths= in a\n"
  "# drop-in (systemctl edit ainode).\n#\n${text}")
