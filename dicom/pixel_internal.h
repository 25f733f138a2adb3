// pixel_internal.h — inside dicom/ only: what image.cpp (an image read and
// decoded) and codestream.cpp (compressed frames checked before a codec
// sees them, JPEG 2000 decoded) share.
#ifndef AINODE_DICOM_PIXEL_INTERNAL_H
#define AINODE_DICOM_PIXEL_INTERNAL_H

#include "dicom/internal.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ainode_dicom {

// A decode that cannot go on: CODE is the DICOM_E* the caller returns.
struct image_error : std::runtime_error {
    int code;
    image_error(const std::string &m, int c) : std::runtime_error(m), code(c) {}
};

[[noreturn]] inline void fail(const std::string &msg) { throw image_error(msg, DICOM_EFORMAT); }
[[noreturn]] inline void fail_io(const std::string &msg) { throw image_error(msg, DICOM_EIO); }

// Where decoded values go: floats, or int16 when every value (after the
// Modality LUT) is an integer within int16's range. A value that is not
// marks the output INEXACT and is not stored: the caller then fails the
// decode with DICOM_ERANGE, before the encoded pixels are dropped.
struct pixel_out {
    float *f = nullptr;
    int16_t *s = nullptr;
    bool inexact = false;

    void put(size_t i, double v)
    {
        if (f) {
            f[i] = static_cast<float>(v);
        } else if (v >= -32768.0 && v <= 32767.0 &&
                   static_cast<double>(static_cast<int16_t>(v)) == v) {
            s[i] = static_cast<int16_t>(v);
        } else {
            inexact = true;
        }
    }
};

struct pixel_format {
    long rows = 0, cols = 0, frames = 1;
    long samples = 1;        // per pixel: 3 for colour
    long stored_samples = 1; // what a pixel takes: 2 for YBR_FULL_422 (chroma halved)
    long bits_allocated = 0, bits_stored = 0, pixel_rep = 0;
};

// Stored value (raw bits in the low bits of W) to its integer meaning.
inline int64_t stored_value(uint32_t w, const pixel_format &f)
{
    const int bs = static_cast<int>(f.bits_stored);
    uint32_t mask = bs >= 32 ? 0xFFFFFFFFu : ((1u << bs) - 1u);
    w &= mask;
    if (f.pixel_rep == 1 && ((w >> (bs - 1)) & 1u))
        return static_cast<int64_t>(w) - (static_cast<int64_t>(1) << bs);
    return static_cast<int64_t>(w);
}

struct rescale {
    double slope = 1.0, intercept = 0.0;
};

// codestream.cpp

// JPEG (ISO 10918) and JPEG-LS transfer syntaxes; JPEG-LS alone; JPEG 2000.
bool is_jpeg_xfer(const DcmXfer &x);
bool is_jpegls_xfer(const DcmXfer &x);
bool is_j2k_xfer(const DcmXfer &x);

// Fails unless every frame of the JPEG or JPEG-LS (CODEC) pixel data SEQ has
// a frame header that agrees with F: checked before DCMTK's codec allocates.
void check_jpeg_frames(DcmPixelSequence *seq, const pixel_format &f, const char *codec);

// Decodes the JPEG 2000 pixel data SEQ into OUT, frame k with RS[k], each
// frame's codestream header checked against F first.
void decode_j2k(DcmPixelSequence *seq, const pixel_format &f, const std::vector<rescale> &rs,
                pixel_out &out);

} // namespace ainode_dicom

#endif
