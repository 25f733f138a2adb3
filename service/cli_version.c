/* cli_version.c — `ainode version [--json]`: the version, and as JSON the
 * build (type, compiler, git describe at configure time) and what this
 * binary runs with: DCMTK, libtorch, the CUDA runtime and the GPUs seen. */
#include "service/cli.h"

#include "dicom/dicom.h"
#include "inference/inference.h"

#include <jansson.h>
#include <stdio.h>
#include <uv.h>

/* Set by service/CMakeLists.txt on this file; absent in a build that
 * compiles it elsewhere (the test build ainode-faults). */
#ifndef AINODE_BUILD_TYPE
#define AINODE_BUILD_TYPE "unknown"
#endif
#ifndef AINODE_GIT_DESCRIBE
#define AINODE_GIT_DESCRIBE "unknown"
#endif

#if defined(__clang__)
#define COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define COMPILER "gcc " __VERSION__
#else
#define COMPILER "unknown"
#endif

/* "12.1" from 12010 (CUDA's MAJOR * 1000 + MINOR * 10); null for 0. */
static json_t *cuda_version(long v)
{
    if (v <= 0)
        return json_null();
    char s[32];
    snprintf(s, sizeof s, "%ld.%ld", v / 1000, (v % 1000) / 10);
    return json_string(s);
}

int cli_version(int json)
{
    if (!json) {
        printf("ainode %s\n", AINODE_VERSION);
        return CLI_EXIT_OK;
    }
    struct infer_runtime rt;
    infer_runtime_info(&rt);
    json_t *devices = json_array();
    for (int i = 0; i < rt.device_count; i++)
        json_array_append_new(devices,
                              json_pack("{s:i, s:o}", "index", i, "name",
                                        i < INFER_MAX_DEVICES && rt.device_names[i][0]
                                            ? json_string(rt.device_names[i])
                                            : json_null()));
    json_t *doc = json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:{s:o, s:o, s:b, s:i, s:o}}", "version",
        AINODE_VERSION, "build", "type", AINODE_BUILD_TYPE, "compiler", COMPILER, "git",
        AINODE_GIT_DESCRIBE, "dcmtk", dicom_toolkit_version(), "libtorch", rt.torch_version,
        "libuv", uv_version_string(), "cuda", "runtime", cuda_version(rt.cuda_runtime),
        "cudnn", rt.cudnn ? json_integer(rt.cudnn) : json_null(), "available", rt.cuda_available, "device_count",
        rt.device_count, "devices", devices);
    if (!doc) {
        fprintf(stderr, "ainode: out of memory\n");
        return CLI_EXIT_ERROR;
    }
    json_dumpf(doc, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(doc);
    return CLI_EXIT_OK;
}
