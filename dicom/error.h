// error.h — inside dicom/ only: how the shim hands a reason to C callers.
#ifndef AINODE_DICOM_ERROR_H
#define AINODE_DICOM_ERROR_H

#include <cstddef>
#include <cstring>
#include <string>

namespace ainode_dicom {

// Copies MSG into the caller's ERR buffer as one line: DCMTK condition
// texts and codec messages may carry newlines.
inline void copy_err(char *err, size_t errlen, const std::string &msg)
{
    if (!err || errlen == 0)
        return;
    size_t n = msg.size() < errlen - 1 ? msg.size() : errlen - 1;
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (err[i] == '\n' || err[i] == '\r')
            err[i] = ' ';
}

} // namespace ainode_dicom

#endif
