/*
 * model.cpp — the only code that touches libtorch at run time: load a
 * TorchScript file on a device, run it, copy the output out. Every C++
 * exception is caught here and turned into an INFER_E* code and one line.
 */
#include "inference/inference.h"

extern "C" {
#include "common/buffer.h"
#include "common/checked.h"
#include "common/error.h"
}

#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <vector>

struct infer_model {
    torch::jit::Module module;
    c10::Device device;
    std::string spec;       /* the device as the caller named it, for messages */
    c10::ScalarType dtype;  /* what the module's weights and inputs are: float, half, bfloat16 */
    /* CUDA only: pinned host floats the input is staged in, grown to the
     * largest input seen and reused, so that each run copies host to
     * device once, by DMA. Undefined until the first CUDA run. */
    at::Tensor staging;
    /* The last run's output, on the host as contiguous float, for
     * infer_model_run_view; released when the next run starts. */
    at::Tensor output;
};

namespace {

/* One line out of a libtorch message. Most put the cause first and a
 * backtrace after it; TorchScript interpreter errors put the cause last,
 * after the script traceback. */
std::string one_line(const std::string &msg)
{
    bool cause_last = msg.find("Traceback of TorchScript") != std::string::npos;
    std::string pick;
    size_t pos = 0;
    while (pos <= msg.size()) {
        size_t end = msg.find_first_of("\r\n", pos);
        if (end == std::string::npos)
            end = msg.size();
        size_t b = msg.find_first_not_of(" \t", pos);
        if (b != std::string::npos && b < end) {
            pick = msg.substr(b, end - b);
            if (!cause_last)
                break;
        }
        pos = end + 1;
    }
    return pick.empty() ? "unknown error" : pick;
}

std::string what_of(const c10::Error &e)
{
    return one_line(e.what_without_backtrace());
}

std::string what_of(const std::exception &e)
{
    return one_line(e.what());
}

/* libtorch's CPU tensors (every model output and intermediate) come from
 * here. A sliding window allocates and frees the same tensors of tens of
 * MiB for every patch; glibc maps each one afresh (they are above its
 * mmap threshold) and the kernel zeroes it page by page, which costs more
 * than the arithmetic of a light model. So freed large blocks are kept
 * for the next request of the same size (as libtorch's CUDA allocator
 * does on the GPU), up to kCacheLimit bytes, until infer_model_trim();
 * new ones come from malloc on huge pages (common/buffer.h). Aligned as
 * libtorch's own are (64 bytes): malloc's pointer and the block's size
 * are kept just before the data. */
constexpr size_t kTensorAlign = 64;
constexpr size_t kCacheMin = size_t(1) << 20;   /* smaller blocks: malloc's own bins */
constexpr size_t kCacheLimit = size_t(512) << 20;

struct block_header {
    void *raw;
    size_t size;
};

struct tensor_cache {
    std::mutex lock;
    std::vector<std::pair<void *, size_t>> blocks; /* data, size */
    size_t bytes = 0;
};

tensor_cache &cache()
{
    static tensor_cache *c = new tensor_cache; /* never destroyed: tensors may outlive main */
    return *c;
}

block_header header_of(void *data)
{
    block_header h;
    std::memcpy(&h, static_cast<char *>(data) - sizeof h, sizeof h);
    return h;
}

void free_tensor_memory(void *data)
{
    if (!data)
        return;
    block_header h = header_of(data);
    if (h.size >= kCacheMin) {
        tensor_cache &c = cache();
        std::lock_guard<std::mutex> g(c.lock);
        if (c.bytes + h.size <= kCacheLimit) {
            try {
                c.blocks.emplace_back(data, h.size);
                c.bytes += h.size;
                return;
            } catch (...) {
                /* No room to remember it: free it. */
            }
        }
    }
    std::free(h.raw);
}

void *cached_block(size_t n)
{
    if (n < kCacheMin)
        return nullptr;
    tensor_cache &c = cache();
    std::lock_guard<std::mutex> g(c.lock);
    for (size_t i = c.blocks.size(); i-- > 0;) {
        if (c.blocks[i].second == n) {
            void *data = c.blocks[i].first;
            c.blocks[i] = c.blocks.back();
            c.blocks.pop_back();
            c.bytes -= n;
            return data;
        }
    }
    return nullptr;
}

void empty_cache()
{
    tensor_cache &c = cache();
    std::vector<std::pair<void *, size_t>> blocks;
    {
        std::lock_guard<std::mutex> g(c.lock);
        blocks.swap(c.blocks);
        c.bytes = 0;
    }
    for (auto &b : blocks)
        std::free(header_of(b.first).raw);
}

struct huge_page_allocator final : c10::Allocator {
    c10::DataPtr allocate(size_t n) const override
    {
        void *data = cached_block(n);
        if (!data) {
            void *raw = n <= SIZE_MAX - kTensorAlign ? buffer_alloc(n + kTensorAlign) : nullptr;
            if (!raw)
                throw std::bad_alloc();
            /* malloc aligns to 16 at least: the data lies 16 to 64 bytes in,
             * room for the header. */
            uintptr_t at = (reinterpret_cast<uintptr_t>(raw) + kTensorAlign) & ~(kTensorAlign - 1);
            data = reinterpret_cast<void *>(at);
            block_header h{raw, n};
            std::memcpy(static_cast<char *>(data) - sizeof h, &h, sizeof h);
        }
        return {data, data, &free_tensor_memory, c10::Device(c10::DeviceType::CPU)};
    }
    c10::DeleterFnPtr raw_deleter() const override
    {
        return &free_tensor_memory;
    }
};

void use_huge_page_allocator()
{
    static huge_page_allocator allocator;
    static std::once_flag once;
    /* Priority 1: above the allocator libtorch registers for itself (0). */
    std::call_once(once, [] { c10::SetCPUAllocator(&allocator, 1); });
}

/* Parses "cpu", "cuda" or "cuda:N" ourselves: c10::Device accepts more
 * ("mps", "xla", ...) and we want a single, explicit set. */
int parse_device(const char *spec, c10::Device *out, std::string *why)
{
    if (!spec) {
        *why = "no device given (use cpu, cuda or cuda:N)";
        return INFER_EDEVICE;
    }
    if (std::strcmp(spec, "cpu") == 0) {
        *out = c10::Device(c10::kCPU);
        return 0;
    }
    long index = 0;
    bool ok = false;
    if (std::strcmp(spec, "cuda") == 0) {
        ok = true; /* libtorch's current CUDA device, cuda:0 unless changed */
    } else if (std::strncmp(spec, "cuda:", 5) == 0 && spec[5] >= '0' && spec[5] <= '9') {
        char *end = nullptr;
        index = std::strtol(spec + 5, &end, 10); /* LONG_MAX on overflow: no such device */
        ok = *end == '\0';
    }
    if (!ok) {
        *why = std::string("unknown device '") + spec + "' (use cpu, cuda or cuda:N)";
        return INFER_EDEVICE;
    }
    if (!torch::cuda::is_available()) {
        *why = std::string("device ") + spec +
               " requested but this libtorch has no CUDA support or no GPU is visible";
        return INFER_EDEVICE;
    }
    size_t count = torch::cuda::device_count();
    if (static_cast<size_t>(index) >= count) {
        *why = std::string("device ") + spec + " requested but only " + std::to_string(count) +
               " CUDA device(s) are visible (cuda:0 to cuda:" + std::to_string(count - 1) + ")";
        return INFER_EDEVICE;
    }
    /* index < count, and count fits c10::DeviceIndex. */
    *out = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
    return 0;
}

/* The first tensor of a forward's result: a tensor, or the first element
 * of a tuple or list (models often return (logits, aux...)). */
bool first_tensor(const c10::IValue &v, at::Tensor *out)
{
    if (v.isTensor()) {
        *out = v.toTensor();
        return true;
    }
    if (v.isTuple()) {
        const auto &elems = v.toTupleRef().elements();
        if (!elems.empty() && elems[0].isTensor()) {
            *out = elems[0].toTensor();
            return true;
        }
        return false;
    }
    if (v.isTensorList()) {
        auto list = v.toTensorList();
        if (list.size() > 0) {
            *out = list.get(0);
            return true;
        }
        return false;
    }
    if (v.isList()) {
        auto list = v.toList();
        if (list.size() > 0 && list.get(0).isTensor()) {
            *out = list.get(0).toTensor();
            return true;
        }
    }
    return false;
}

c10::ScalarType dtype_of(enum infer_precision p)
{
    return p == INFER_FP16 ? c10::kHalf : p == INFER_BF16 ? c10::kBFloat16 : c10::kFloat;
}

/* X (float, on the host) on M's device in M's number format. On the CPU
 * in fp32 that is X itself. On CUDA the floats are staged in pinned memory
 * and copied asynchronously; the conversion to half or bfloat16 runs on
 * the device. The stream is synchronised before the run returns (the
 * output is copied back), so the staging buffer is free again by the next
 * call. */
at::Tensor to_model(struct infer_model *m, const at::Tensor &x)
{
    if (m->device.is_cpu())
        return m->dtype == c10::kFloat ? x : x.to(m->dtype);
    int64_t n = x.numel();
    if (!m->staging.defined() || m->staging.numel() < n)
        m->staging = at::empty({n}, at::TensorOptions().dtype(c10::kFloat).pinned_memory(true));
    at::Tensor host = m->staging.narrow(0, 0, n).view(x.sizes());
    host.copy_(x);
    at::Tensor d = host.to(m->device, c10::kFloat, /*non_blocking=*/true);
    return m->dtype == c10::kFloat ? d : d.to(m->dtype);
}

} // namespace

extern "C" {

INFER_API const char *infer_precision_name(enum infer_precision p)
{
    switch (p) {
    case INFER_FP32:
        return "fp32";
    case INFER_FP16:
        return "fp16";
    case INFER_BF16:
        return "bf16";
    }
    return "?";
}

INFER_API void infer_tensor_free(struct infer_tensor *t)
{
    if (!t)
        return;
    std::free(t->data);
    t->data = nullptr;
    t->ndim = 0;
}

INFER_API int infer_device_check(const char *device, char *err, size_t errlen)
{
    try {
        c10::Device dev(c10::kCPU);
        std::string why;
        int rc = parse_device(device, &dev, &why);
        if (rc != 0)
            error_set(err, errlen, rc, "%s", why.c_str());
        return rc;
    } catch (const c10::Error &e) {
        return error_set(err, errlen, INFER_EDEVICE, "device check failed: %s", what_of(e).c_str());
    } catch (const std::exception &e) {
        return error_set(err, errlen, INFER_EDEVICE, "device check failed: %s", what_of(e).c_str());
    } catch (...) {
        return error_set(err, errlen, INFER_EDEVICE, "device check failed: unknown error");
    }
}

INFER_API int infer_model_load(const char *path, const char *device, struct infer_model **out,
                               char *err, size_t errlen)
{
    return infer_model_load_ex(path, device, INFER_FP32, out, err, errlen);
}

INFER_API int infer_model_load_ex(const char *path, const char *device,
                                  enum infer_precision precision, struct infer_model **out,
                                  char *err, size_t errlen)
{
    if (!out)
        return error_set(err, errlen, INFER_EINVAL, "infer_model_load: no output pointer");
    *out = nullptr;
    if (!path || !*path)
        return error_set(err, errlen, INFER_EINVAL, "infer_model_load: no model path");
    std::string where = std::string("cannot load model '") + path + "': ";
    try {
        use_huge_page_allocator();
        c10::Device dev(c10::kCPU);
        std::string why;
        int rc = parse_device(device, &dev, &why);
        if (rc != 0)
            return error_set(err, errlen, rc, "%s", why.c_str());
        if (precision != INFER_FP32 && precision != INFER_FP16 && precision != INFER_BF16)
            return error_set(err, errlen, INFER_EINVAL, "unknown precision %d (use fp32, fp16 "
                             "or bf16)", static_cast<int>(precision));
        /* Half formats on the CPU are slow or missing kernels: refused. */
        if (precision != INFER_FP32 && !dev.is_cuda())
            return error_set(err, errlen, INFER_EDEVICE,
                             "precision %s needs a CUDA device (device is %s)",
                             infer_precision_name(precision), device);
        /* libtorch's own message for an unreadable file lacks the reason. */
        std::FILE *f = std::fopen(path, "rb");
        if (!f)
            return error_set(err, errlen, INFER_EMODEL, "%s%s", where.c_str(),
                             std::strerror(errno));
        std::fclose(f);
        torch::jit::Module module = torch::jit::load(path, dev);
        module.eval();
        c10::ScalarType dtype = dtype_of(precision);
        if (dtype != c10::kFloat)
            module.to(dtype); /* floating parameters and buffers only */
        *out = new infer_model{std::move(module), dev, device, dtype, at::Tensor(), at::Tensor()};
        return 0;
    } catch (const std::bad_alloc &) {
        return error_set(err, errlen, INFER_ENOMEM, "%sout of memory", where.c_str());
    } catch (const c10::Error &e) {
        return error_set(err, errlen, INFER_EMODEL, "%s%s", where.c_str(), what_of(e).c_str());
    } catch (const std::exception &e) {
        return error_set(err, errlen, INFER_EMODEL, "%s%s", where.c_str(), what_of(e).c_str());
    } catch (...) {
        return error_set(err, errlen, INFER_EMODEL, "%sunknown error", where.c_str());
    }
}

namespace {

/* Runs the forward on INPUT and copies its first output out as float:
 * into BUF when it holds the output (at most CAPACITY floats; a larger
 * output is left for the caller to report from *Y's shape), or, with BUF
 * NULL, into a contiguous host tensor in *Y. Returns 0 or an INFER_E* code
 * with ERR set. */
int forward(struct infer_model *m, const float *input, const int64_t *shape, int ndim,
            at::Tensor *y, float *buf, size_t capacity, char *err, size_t errlen)
{
    if (ndim < 1 || ndim > 8)
        return error_set(err, errlen, INFER_EINVAL,
                         "infer_model_run: input must have 1 to 8 dimensions, got %d", ndim);
    std::vector<int64_t> sizes(shape, shape + ndim);
    for (int i = 0; i < ndim; i++) {
        if (sizes[i] <= 0)
            return error_set(err, errlen, INFER_EINVAL,
                             "infer_model_run: input dimension %d is %lld, must be > 0", i,
                             static_cast<long long>(sizes[i]));
    }
    try {
        /* The previous output is no longer the caller's (see
         * infer_model_run_view): its memory goes back before this run's. */
        m->output = at::Tensor();
        /* Inference mode: no autograd bookkeeping, and the cheapest way to
         * tell libtorch nothing here will ever be differentiated. */
        c10::InferenceMode guard;
        /* The model must not write to its input: from_blob wraps the
         * caller's (const) buffer without a copy. */
        at::Tensor x = torch::from_blob(const_cast<float *>(input), sizes,
                                        torch::TensorOptions().dtype(torch::kFloat));
        std::vector<c10::IValue> args{to_model(m, x)};
        c10::IValue result = m->module.forward(args);
        if (!first_tensor(result, y))
            return error_set(err, errlen, INFER_EMODEL,
                             "model output is not a tensor (nor a tuple or list starting "
                             "with one), got %s", result.tagKind().c_str());
        if (y->dim() > 8)
            return error_set(err, errlen, INFER_EMODEL,
                             "model output has %lld dimensions, at most 8 are supported",
                             static_cast<long long>(y->dim()));
        if (!buf) {
            *y = y->to(c10::kCPU, c10::kFloat).contiguous();
        } else if (static_cast<size_t>(y->numel()) <= capacity) {
            /* Straight into the caller's buffer: one copy from the device
             * (or from the CPU output), converted to float on the way. */
            torch::from_blob(buf, y->sizes(), torch::TensorOptions().dtype(torch::kFloat))
                .copy_(*y);
        }
        return 0;
    } catch (const std::bad_alloc &) {
        return error_set(err, errlen, INFER_ENOMEM, "model run on %s: out of memory",
                         m->spec.c_str());
    } catch (const c10::OutOfMemoryError &e) {
        /* CUDA allocator: the caller may retry with smaller patches. */
        return error_set(err, errlen, INFER_ENOMEM, "model run on %s: out of memory: %s",
                         m->spec.c_str(), what_of(e).c_str());
    } catch (const c10::Error &e) {
        return error_set(err, errlen, INFER_EMODEL, "model run on %s failed: %s",
                         m->spec.c_str(), what_of(e).c_str());
    } catch (const std::exception &e) {
        return error_set(err, errlen, INFER_EMODEL, "model run on %s failed: %s",
                         m->spec.c_str(), what_of(e).c_str());
    } catch (...) {
        return error_set(err, errlen, INFER_EMODEL, "model run on %s failed: unknown error",
                         m->spec.c_str());
    }
}

} // namespace

INFER_API int infer_model_run(struct infer_model *m, const float *input, const int64_t *shape,
                              int ndim, struct infer_tensor *out, char *err, size_t errlen)
{
    if (!m || !input || !shape || !out)
        return error_set(err, errlen, INFER_EINVAL, "infer_model_run: null argument");
    out->data = nullptr;
    out->ndim = 0;
    at::Tensor y;
    int rc = forward(m, input, shape, ndim, &y, nullptr, 0, err, errlen);
    if (rc != 0)
        return rc;
    size_t n = static_cast<size_t>(y.numel()), bytes;
    if (!size_mul_ok(n, sizeof(float), &bytes))
        return error_set(err, errlen, INFER_ENOMEM, "the model output of %zu floats is too large",
                         n);
    float *data = static_cast<float *>(std::malloc(n ? bytes : 1));
    if (!data)
        return error_set(err, errlen, INFER_ENOMEM,
                         "out of memory for the model output (%zu floats)", n);
    if (n)
        std::memcpy(data, y.data_ptr<float>(), bytes);
    out->data = data;
    out->ndim = static_cast<int>(y.dim());
    for (int i = 0; i < out->ndim; i++)
        out->shape[i] = y.size(i);
    return 0;
}

INFER_API int infer_model_run_into(struct infer_model *m, const float *input,
                                   const int64_t *shape, int ndim, float *buf, size_t capacity,
                                   int64_t *out_shape, int *out_ndim, char *err, size_t errlen)
{
    if (!m || !input || !shape || !buf || !out_shape || !out_ndim)
        return error_set(err, errlen, INFER_EINVAL, "infer_model_run_into: null argument");
    *out_ndim = 0;
    at::Tensor y;
    int rc = forward(m, input, shape, ndim, &y, buf, capacity, err, errlen);
    if (rc != 0)
        return rc;
    size_t n = static_cast<size_t>(y.numel());
    *out_ndim = static_cast<int>(y.dim());
    for (int i = 0; i < *out_ndim; i++)
        out_shape[i] = y.size(i);
    if (n > capacity)
        return error_set(err, errlen, INFER_EMODEL,
                         "the model returned %zu values where at most %zu were expected", n,
                         capacity);
    return 0;
}

INFER_API int infer_model_run_view(struct infer_model *m, const float *input,
                                   const int64_t *shape, int ndim, const float **out,
                                   int64_t *out_shape, int *out_ndim, char *err, size_t errlen)
{
    if (!m || !input || !shape || !out || !out_shape || !out_ndim)
        return error_set(err, errlen, INFER_EINVAL, "infer_model_run_view: null argument");
    *out = nullptr;
    *out_ndim = 0;
    at::Tensor y;
    int rc = forward(m, input, shape, ndim, &y, nullptr, 0, err, errlen);
    if (rc != 0)
        return rc;
    /* forward() left Y on the host, float and contiguous: on the CPU in
     * fp32 that is the model's own output tensor, not a copy. */
    m->output = y;
    *out = y.numel() ? y.data_ptr<float>() : nullptr;
    *out_ndim = static_cast<int>(y.dim());
    for (int i = 0; i < *out_ndim; i++)
        out_shape[i] = y.size(i);
    return 0;
}

INFER_API void infer_model_trim(struct infer_model *m)
{
    if (m)
        m->output = at::Tensor();
    empty_cache();
}

INFER_API void infer_model_free(struct infer_model *m)
{
    try {
        delete m;
        empty_cache();
    } catch (...) {
        /* A destructor that throws must not cross into C. */
    }
}

INFER_API void infer_parallel_for(long n, void (*fn)(void *ud, long begin, long end), void *ud)
{
    if (n <= 0)
        return;
    try {
        at::parallel_for(0, n, 1, [fn, ud](int64_t b, int64_t e) { fn(ud, b, e); });
    } catch (...) {
        /* parallel_for rethrows only what FN throws, and FN is C. */
    }
}

INFER_API void infer_set_threads(int n)
{
    if (n < 1)
        return;
    try {
        at::set_num_threads(n);
    } catch (...) {
        /* Advisory: keep the current count if libtorch refuses. */
    }
}

} // extern "C"
