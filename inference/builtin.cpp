/*
 * builtin.cpp — the built-in reference model "ct-bone-body", built as a
 * TorchScript module in C++ (no Python needed to produce it).
 *
 * Input 1x1xDxHxW float, CT Hounsfield units. Output 1x3xDxHxW float,
 * one-hot, whose argmax over channels is
 *   1 "Bone"  for 226 <= HU <= 3071,
 *   2 "Soft tissue"  for HU > -500 that is not bone,
 *   0 background otherwise (NaN included).
 * Three comparisons of x with the model's thresholds (attributes
 * bone_low, bone_high, body_low), each exact in float32 on any device:
 * nothing is computed from x before it is compared. Do not rescale x
 * before the comparisons. Pointwise, so patch-wise (sliding window) runs
 * give identical labels. Written as the fewest whole-tensor operations:
 * libtorch runs each one as a pass over memory, and the model is light
 * enough that those passes are its whole cost.
 */
#include "inference/inference.h"

extern "C" {
#include "common/error.h"
}

#include <torch/script.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

namespace {

const char *const kDescription =
    "ct-bone-body: transparent reference model, not a clinical model. "
    "Thresholds CT Hounsfield units: label 1 bone for 226 <= HU <= 3071, "
    "label 2 body for HU > -500 that is not bone, 0 otherwise.";

const char *const kForward = R"JIT(
def forward(self, x):
    assert x.dim() == 5, "ct-bone-body expects a 5-D input N x 1 x D x H x W"
    assert x.size(1) == 1, "ct-bone-body expects one input channel (N x 1 x D x H x W)"
    bone = (x >= self.bone_low) & (x <= self.bone_high)
    body = (x > self.body_low) & ~bone
    return torch.cat([~(bone | body), bone, body], 1).float()
)JIT";

/* The first non-empty line: script compile errors start with a newline
 * and continue with the offending source. */
std::string first_line(const std::string &msg)
{
    size_t b = msg.find_first_not_of(" \t\r\n");
    if (b == std::string::npos)
        return "unknown error";
    return msg.substr(b, msg.find_first_of("\r\n", b) - b);
}

} // namespace

extern "C" INFER_API int infer_write_builtin_ct_bone_body(const char *path, char *err,
                                                          size_t errlen)
{
    if (!path || !*path)
        return error_set(err, errlen, INFER_EINVAL, "infer_write_builtin_ct_bone_body: no path");
    /* Written under a temporary name and renamed, so a failed or
     * interrupted write never leaves a truncated model at PATH. */
    std::string tmp = std::string(path) + ".tmp";
    std::string where = std::string("cannot write model '") + path + "': ";
    try {
        torch::jit::Module m("ainode.ct_bone_body");
        m.register_attribute("bone_low", c10::FloatType::get(), 226.0);
        m.register_attribute("bone_high", c10::FloatType::get(), 3071.0);
        m.register_attribute("body_low", c10::FloatType::get(), -500.0);
        m.register_attribute("description", c10::StringType::get(), std::string(kDescription));
        m.define(kForward);
        m.eval();
        m.save(tmp);
    } catch (const c10::Error &e) {
        std::remove(tmp.c_str());
        return error_set(err, errlen, INFER_EMODEL, "%s%s", where.c_str(),
                         first_line(e.what_without_backtrace()).c_str());
    } catch (const std::exception &e) {
        std::remove(tmp.c_str());
        return error_set(err, errlen, INFER_EMODEL, "%s%s", where.c_str(),
                         first_line(e.what()).c_str());
    } catch (...) {
        std::remove(tmp.c_str());
        return error_set(err, errlen, INFER_EMODEL, "%sunknown error", where.c_str());
    }
    if (std::rename(tmp.c_str(), path) != 0) {
        std::string why = std::strerror(errno);
        std::remove(tmp.c_str());
        return error_set(err, errlen, INFER_EMODEL, "%s%s", where.c_str(), why.c_str());
    }
    return 0;
}
