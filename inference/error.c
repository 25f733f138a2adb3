#include "inference/inference.h"

const char *inference_strerror(int code)
{
    switch ((enum infer_error)code) {
    case INFER_OK:
        return "success";
    case INFER_EINVAL:
        return "bad argument or input geometry";
    case INFER_EDEVICE:
        return "device unknown or not available";
    case INFER_EMODEL:
        return "model file unreadable or failed to run";
    case INFER_ENOMEM:
        return "out of memory";
    case INFER_EREFUSED:
        return "the slices cannot form one volume";
    case INFER_ECANCELLED:
        return "cancelled";
    case INFER_ELIMIT:
        return "over the job's memory budget";
    }
    return "unknown inference error";
}
