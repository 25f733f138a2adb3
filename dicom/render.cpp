// render.cpp — images as they are displayed, for models that read pictures
// (image.h: dicom_sources_render). DCMTK's dcmimgle/dcmimage apply the
// display pipeline of PS3.4 N.2 (Modality LUT, VOI window or LUT,
// MONOCHROME1 polarity) and convert every colour model (RGB, YBR_FULL,
// YBR_FULL_422, palette colour, planar or not) to RGB: the model sees what
// a radiologist sees, as it was trained on exported pictures.

#include "dicom/image.h"
#include "dicom/internal.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcelem.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimage/diregist.h> // colour support of DicomImage
#include <dcmtk/dcmimgle/dcmimage.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>

namespace {

using ainode_dicom::copy_err;

bool is_j2k(const char *uid)
{
    return uid && (!strcmp(uid, UID_JPEG2000LosslessOnlyTransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000TransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax));
}

// Chooses the grey window: the manifest's, else the image's first window,
// else its first VOI LUT, else its whole range of values.
bool set_window(DicomImage &di, const dicom_render *r)
{
    if (r->has_window)
        return di.setWindow(r->window_center, r->window_width) != 0;
    if (di.getWindowCount() > 0 && di.setWindow(0))
        return true;
    if (di.getVoiLutCount() > 0 && di.setVoiLut(0))
        return true;
    return di.setMinMaxWindow() != 0;
}

// One string value of DS (its first), or "" when absent.
std::string first_string(DcmDataset *ds, const DcmTagKey &key)
{
    OFString v;
    if (ds->findAndGetOFString(key, v, 0).bad())
        return "";
    return std::string(v.c_str());
}

bool first_double(DcmDataset *ds, const DcmTagKey &key, double *out)
{
    Float64 v = 0;
    if (ds->findAndGetFloat64(key, v, 0).bad() || !std::isfinite(v))
        return false;
    *out = v;
    return true;
}

// One frame of native little endian values (T: uint8_t or uint16_t) into
// O: y = v * A + B clamped to 0..1, or 1 - y with INVERT, where v is the
// value in the STORED low bits, two's complement when SIGN (its top bit) is
// not 0. Straight-line code, vectorised (at -O2 GCC would not): four
// pixels per instruction with SSE instead of one.
template <typename T, bool INVERT>
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("tree-vectorize", "vect-cost-model=dynamic")))
#endif
void window_frame(const Uint8 *src, size_t n, uint32_t mask, int32_t sign, float a, float b,
                  float *o)
{
    for (size_t p = 0; p < n; p++) {
        T w;
        memcpy(&w, src + p * sizeof(T), sizeof(T));
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
        if (sizeof(T) == 2)
            w = static_cast<T>((w >> 8) | (w << 8));
#endif
        int32_t v = static_cast<int32_t>(w & mask);
        // v - 2^stored when the sign bit is set; v otherwise.
        v = (v ^ sign) - sign;
        float y = static_cast<float>(v) * a + b;
        y = std::min(std::max(y, 0.0f), 1.0f);
        o[p] = INVERT ? 1.0f - y : y;
    }
}

// The common grey image rendered without DicomImage: native 8- or 16-bit
// values, one sample, MONOCHROME1 or 2, Rescale Slope and Intercept (or
// neither), and a linear window (the manifest's, or the image's first).
// That is one pass over the pixels where DicomImage makes an internal copy
// and an output copy of each frame first. The values are those DicomImage
// gives (PS3.3 C.11.2.1.2.1), without its 16-bit steps. Returns false,
// having written nothing, for any image it does not cover: DicomImage
// renders those.
bool render_grey_direct(DcmDataset *ds, E_TransferSyntax xfer, const dicom_image *img,
                        const dicom_render *r, float *out)
{
    const DcmXfer x(xfer);
    if (x.isEncapsulated() || !x.isLittleEndian())
        return false;
    Uint16 spp = 0, bits = 0, stored = 0, high = 0, rep = 0;
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, spp).bad() || spp != 1 ||
        ds->findAndGetUint16(DCM_BitsAllocated, bits).bad() || (bits != 8 && bits != 16) ||
        ds->findAndGetUint16(DCM_BitsStored, stored).bad() || stored < 1 || stored > bits ||
        ds->findAndGetUint16(DCM_HighBit, high).bad() || high != stored - 1 ||
        ds->findAndGetUint16(DCM_PixelRepresentation, rep).bad() || rep > 1)
        return false;
    const std::string pi = first_string(ds, DCM_PhotometricInterpretation);
    if (pi != "MONOCHROME1" && pi != "MONOCHROME2")
        return false;
    // What DicomImage would treat otherwise: LUTs, other VOI functions,
    // presentation shapes, per-frame values of enhanced objects.
    if (ds->tagExists(DCM_ModalityLUTSequence) || ds->tagExists(DCM_PresentationLUTShape) ||
        ds->tagExists(DCM_SharedFunctionalGroupsSequence) ||
        ds->tagExists(DCM_PerFrameFunctionalGroupsSequence))
        return false;
    const std::string fn = first_string(ds, DCM_VOILUTFunction);
    if (!fn.empty() && fn != "LINEAR")
        return false;
    double slope = 1, intercept = 0;
    const bool has_slope = ds->tagExists(DCM_RescaleSlope);
    if (has_slope != ds->tagExists(DCM_RescaleIntercept))
        return false;
    if (has_slope && (!first_double(ds, DCM_RescaleSlope, &slope) || slope == 0 ||
                      !first_double(ds, DCM_RescaleIntercept, &intercept)))
        return false;
    double center = 0, width = 0;
    if (r->has_window) {
        center = r->window_center;
        width = r->window_width;
    } else if (!first_double(ds, DCM_WindowCenter, &center) ||
               !first_double(ds, DCM_WindowWidth, &width)) {
        return false;
    }
    if (!std::isfinite(center) || !(width >= 2) || !std::isfinite(width))
        return false;

    const size_t plane = static_cast<size_t>(img->rows) * static_cast<size_t>(img->cols);
    const size_t n = plane * static_cast<size_t>(img->frames);
    const size_t bytes_per = bits / 8;
    DcmElement *elem = nullptr;
    Uint8 *data = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, elem).bad() || !elem ||
        elem->getLength() < n * bytes_per || elem->getUint8Array(data).bad() || !data)
        return false;

    // y = ((v * slope + intercept) - (center - 0.5)) / (width - 1) + 0.5,
    // clamped to 0..1: one multiply and add per pixel.
    const float a = static_cast<float>(slope / (width - 1));
    const float b = static_cast<float>((intercept - (center - 0.5)) / (width - 1) + 0.5);
    const bool invert = pi == "MONOCHROME1";
    const uint32_t mask = (1u << stored) - 1; /* stored <= 16 */
    const int32_t sign = rep ? static_cast<int32_t>(1u << (stored - 1)) : 0;
    const int channels = r->channels;
    for (int f = 0; f < img->frames; f++) {
        float *o = out + static_cast<size_t>(f) * plane * static_cast<size_t>(channels);
        const Uint8 *src = data + static_cast<size_t>(f) * plane * bytes_per;
        if (bits == 16)
            (invert ? window_frame<uint16_t, true> : window_frame<uint16_t, false>)(
                src, plane, mask, sign, a, b, o);
        else
            (invert ? window_frame<uint8_t, true> : window_frame<uint8_t, false>)(
                src, plane, mask, sign, a, b, o);
        for (int c = 1; c < channels; c++)
            memcpy(o + plane * static_cast<size_t>(c), o, plane * sizeof *o);
    }
    return true;
}

} // namespace

extern "C" int dicom_sources_render(struct dicom_sources *s, size_t i,
                                    const struct dicom_render *r, float *out, size_t capacity,
                                    char *err, size_t errlen)
{
    if (!s || i >= s->files.size() || !r || !out || (r->channels != 1 && r->channels != 3))
        return copy_err(err, errlen, "invalid arguments", DICOM_EINVAL);
    ainode_dicom::source_file &sf = s->files[i];
    if (sf.decoded || !sf.header)
        return copy_err(err, errlen, "the image was decoded or rendered already", DICOM_EINVAL);
    const dicom_image *img = sf.image;
    const size_t plane = static_cast<size_t>(img->rows) * static_cast<size_t>(img->cols);
    const size_t need = plane * static_cast<size_t>(r->channels) * static_cast<size_t>(img->frames);
    if (capacity < need)
        return copy_err(err, errlen, "the render buffer is too small", DICOM_EINVAL);
    DcmDataset *ds = sf.header.get();
    const E_TransferSyntax xfer = ds->getOriginalXfer();
    if (is_j2k(DcmXfer(xfer).getXferID()))
        return copy_err(err, errlen,
                        "JPEG 2000 images cannot be rendered for an image model", DICOM_EFORMAT);
    try {
        if (render_grey_direct(ds, xfer, img, r, out)) {
            ds->findAndDeleteElement(DCM_PixelData);
            sf.decoded = true;
            return 0;
        }
        ainode_dicom::register_decoders();
        // All frames at once; the pixels are taken from the data set as it is.
        DicomImage di(ds, xfer, 0UL, 0UL,
                      static_cast<unsigned long>(img->frames));
        if (di.getStatus() != EIS_Normal)
            return copy_err(err, errlen,
                            std::string("cannot render the image: ") +
                                DicomImage::getString(di.getStatus()),
                            DICOM_EFORMAT);
        if (di.getWidth() != static_cast<unsigned long>(img->cols) ||
            di.getHeight() != static_cast<unsigned long>(img->rows) ||
            di.getFrameCount() != static_cast<unsigned long>(img->frames))
            return copy_err(err, errlen, "the rendered image disagrees with its header",
                            DICOM_EFORMAT);
        const bool grey = di.isMonochrome() != 0;
        if (grey && !set_window(di, r))
            return copy_err(err, errlen, "cannot apply the grey window", DICOM_EFORMAT);
        // 16 bits keep a grey window's steps; colour is 8 bits per sample.
        const int bits = grey ? 16 : 8;
        const double top = grey ? 65535.0 : 255.0;
        const float inv16 = static_cast<float>(1.0 / 65535.0);
        for (int f = 0; f < img->frames; f++) {
            const void *data = di.getOutputData(bits, static_cast<unsigned long>(f), 0);
            if (!data)
                return copy_err(err, errlen,
                                "cannot render frame " + std::to_string(f + 1), DICOM_EFORMAT);
            float *o = out + static_cast<size_t>(f) * plane * static_cast<size_t>(r->channels);
            if (grey) {
                const Uint16 *g = static_cast<const Uint16 *>(data);
                // A multiplication, not a division per pixel: the loop
                // vectorises, and the value is within an ulp of g / 65535.
                for (size_t p = 0; p < plane; p++)
                    o[p] = static_cast<float>(g[p]) * inv16;
                for (int c = 1; c < r->channels; c++)
                    memcpy(o + plane * static_cast<size_t>(c), o, plane * sizeof *o);
            } else {
                // Interleaved R, G, B (planar configuration 0 on output).
                const Uint8 *rgb = static_cast<const Uint8 *>(data);
                if (r->channels == 3) {
                    for (size_t p = 0; p < plane; p++)
                        for (int c = 0; c < 3; c++)
                            o[plane * static_cast<size_t>(c) + p] =
                                static_cast<float>(rgb[3 * p + static_cast<size_t>(c)] / top);
                } else {
                    // ITU-R BT.601 luma, as a grey model of a colour picture sees it.
                    for (size_t p = 0; p < plane; p++)
                        o[p] = static_cast<float>((0.299 * rgb[3 * p] + 0.587 * rgb[3 * p + 1] +
                                                   0.114 * rgb[3 * p + 2]) /
                                                  top);
                }
            }
            di.deleteOutputData();
        }
    } catch (const std::bad_alloc &) {
        return copy_err(err, errlen, "out of memory rendering the image", DICOM_ENOMEM);
    } catch (...) {
        return copy_err(err, errlen, "cannot render the image", DICOM_EFORMAT);
    }
    // Rendered (and DicomImage gone): the encoded pixels, and any
    // decompressed copy DCMTK made, go now rather than when the set is
    // closed, so that a series holds one image at a time and each image's
    // buffers reuse the memory of the one before.
    ds->findAndDeleteElement(DCM_PixelData);
    sf.decoded = true;
    return 0;
}
