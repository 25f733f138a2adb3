/*
 * ainode-make-models OUTDIR — writes the built-in models (TorchScript)
 * into OUTDIR at build time, so a fresh build has them without Python.
 */
#include "inference/inference.h"

#include <cstdio>
#include <string>

int main(int argc, char **argv)
{
    if (argc != 2 || !argv[1][0]) {
        std::fprintf(stderr, "usage: %s OUTDIR\n", argc > 0 ? argv[0] : "ainode-make-models");
        return 2;
    }
    std::string path = std::string(argv[1]) + "/ct-bone-body.pt";
    char err[512];
    if (infer_write_builtin_ct_bone_body(path.c_str(), err, sizeof err) != 0) {
        std::fprintf(stderr, "ainode-make-models: %s\n", err);
        return 1;
    }
    return 0;
}
