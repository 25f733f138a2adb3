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
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimage/diregist.h> // colour support of DicomImage
#include <dcmtk/dcmimgle/dcmimage.h>

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

} // namespace

extern "C" int dicom_sources_render(struct dicom_sources *s, size_t i,
                                    const struct dicom_render *r, float *out, size_t capacity,
                                    char *err, size_t errlen)
{
    if (!s || i >= s->files.size() || !r || !out || (r->channels != 1 && r->channels != 3))
        return copy_err(err, errlen, "invalid arguments", DICOM_EINVAL);
    ainode_dicom::source_file &sf = s->files[i];
    if (sf.decoded || !sf.header)
        return copy_err(err, errlen, "the image was decoded already", DICOM_EINVAL);
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
        for (int f = 0; f < img->frames; f++) {
            const void *data = di.getOutputData(bits, static_cast<unsigned long>(f), 0);
            if (!data)
                return copy_err(err, errlen,
                                "cannot render frame " + std::to_string(f + 1), DICOM_EFORMAT);
            float *o = out + static_cast<size_t>(f) * plane * static_cast<size_t>(r->channels);
            if (grey) {
                const Uint16 *g = static_cast<const Uint16 *>(data);
                for (size_t p = 0; p < plane; p++)
                    o[p] = static_cast<float>(g[p] / top);
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
    return 0;
}
