// runtime.cpp — what this process runs models with (infer_runtime_info):
// libtorch's version, its CUDA runtime and the GPUs it sees. Kept apart
// from model.cpp so that `ainode version` costs no TorchScript headers.
#include "inference/inference.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdio>
#include <cstring>
#include <dlfcn.h>

namespace {

// Device names come from the CUDA driver (libcuda), which every machine
// with an NVIDIA GPU has, whatever CUDA toolkit libtorch was built with:
// libtorch's own device properties need the CUDA headers, which a CPU
// build does not have. The driver API's calls used here take plain ints.
void device_names(struct infer_runtime *out)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return;
    typedef int (*init_fn)(unsigned);
    typedef int (*get_fn)(int *, int);
    typedef int (*name_fn)(char *, int, int);
    auto init = reinterpret_cast<init_fn>(dlsym(lib, "cuInit"));
    auto get = reinterpret_cast<get_fn>(dlsym(lib, "cuDeviceGet"));
    auto name = reinterpret_cast<name_fn>(dlsym(lib, "cuDeviceGetName"));
    if (init && get && name && init(0) == 0) {
        for (int i = 0; i < out->device_count && i < INFER_MAX_DEVICES; i++) {
            int dev = 0;
            char buf[sizeof out->device_names[0]] = "";
            if (get(&dev, i) == 0 && name(buf, (int)sizeof buf - 1, dev) == 0)
                std::snprintf(out->device_names[i], sizeof out->device_names[i], "%s", buf);
        }
    }
    dlclose(lib);
}

} // namespace

extern "C" void infer_runtime_info(struct infer_runtime *out)
{
    std::memset(out, 0, sizeof *out);
    out->torch_version = TORCH_VERSION;
    // A libtorch without CUDA answers with an exception.
    try {
        out->cuda_runtime = at::detail::getCUDAHooks().versionCUDART();
    } catch (...) {
        out->cuda_runtime = 0;
    }
    try {
        if (out->cuda_runtime && at::detail::getCUDAHooks().hasCuDNN())
            out->cudnn = at::detail::getCUDAHooks().versionCuDNN();
    } catch (...) {
        out->cudnn = 0;
    }
    try {
        out->cuda_available = torch::cuda::is_available();
        out->device_count = out->cuda_available ? (int)torch::cuda::device_count() : 0;
    } catch (...) {
        out->cuda_available = 0;
        out->device_count = 0;
    }
    if (out->device_count)
        device_names(out);
}
