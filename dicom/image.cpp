// Pixel decoding: stored values -> float after the Modality LUT, plus the
// geometry of every frame. Native, deflated, RLE, JPEG and JPEG-LS data go
// through DCMTK; JPEG 2000 through OpenJPEG (codestream.cpp, which also
// checks every compressed frame's header before a codec sees it).

#include "dicom/image.h"
#include "dicom/internal.h"
#include "dicom/pixel_internal.h"

extern "C" {
#include "common/checked.h"
#include "common/limits.h"
}

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/ofstd/ofstd.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include <sys/mman.h>

#include <cerrno>
#include <cmath>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using ainode_dicom::check_jpeg_frames;
using ainode_dicom::copy_err;
using ainode_dicom::decode_j2k;
using ainode_dicom::fail;
using ainode_dicom::fail_io;
using ainode_dicom::frame_geometry;
using ainode_dicom::image_error;
using ainode_dicom::is_j2k_xfer;
using ainode_dicom::is_jpeg_xfer;
using ainode_dicom::is_jpegls_xfer;
using ainode_dicom::pixel_format;
using ainode_dicom::pixel_out;
using ainode_dicom::register_decoders;
using ainode_dicom::rescale;
using ainode_dicom::stored_value;

void copy_field(char *dst, size_t size, const std::string &s)
{
    size_t n = s.size() < size - 1 ? s.size() : size - 1;
    memcpy(dst, s.data(), n);
    dst[n] = '\0';
}


// Text of a string-valued attribute. Some writers (gdcmconv) leave elements
// as UN in explicit VR files; their bytes are still the text.
bool get_text(DcmItem *item, const DcmTagKey &key, std::string &out)
{
    DcmElement *e = nullptr;
    if (!item || item->findAndGetElement(key, e, OFFalse).bad() || !e)
        return false;
    if (e->getVR() == EVR_UN) {
        Uint8 *b = nullptr;
        if (e->getLength() > 0 && (e->getUint8Array(b).bad() || !b))
            return false;
        out.assign(reinterpret_cast<const char *>(b), e->getLength());
    } else {
        OFString s;
        if (e->getOFStringArray(s).bad())
            return false;
        out.assign(s.c_str(), s.length());
    }
    while (!out.empty() && (out.back() == ' ' || out.back() == '\0'))
        out.pop_back();
    return true;
}

std::string get_string(DcmItem *item, const DcmTagKey &key)
{
    std::string s;
    return get_text(item, key, s) ? s : std::string();
}

long get_us(DcmItem *item, const DcmTagKey &key, long dflt)
{
    Uint16 v = 0;
    if (item->findAndGetUint16(key, v).good())
        return v;
    return dflt;
}

// The first N values of a decimal string attribute, or false; TEXT (may be
// NULL) gets each value as written.
bool get_doubles(DcmItem *item, const DcmTagKey &key, double *out, unsigned long n,
                 OFString *text = nullptr)
{
    std::string s;
    if (!get_text(item, key, s))
        return false;
    size_t start = 0;
    for (unsigned long i = 0; i < n; i++) {
        if (start > s.size())
            return false;
        size_t end = s.find('\\', start);
        if (end == std::string::npos)
            end = s.size();
        std::string v = s.substr(start, end - start);
        size_t b = v.find_first_not_of(' '), e = v.find_last_not_of(' ');
        v = b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
        OFBool ok = OFFalse;
        double d = OFStandard::atof(v.c_str(), &ok); // locale-independent
        if (v.empty() || !ok || !std::isfinite(d))
            return false;
        out[i] = d;
        if (text)
            text[i] = v.c_str();
        start = end + 1;
    }
    return true;
}

// As get_doubles, for a geometry attribute: absent is false, but a value
// that is there and not N finite numbers ("nan", "inf", "1e999", too few
// values) is refused, never taken for absent.
bool get_geometry(DcmItem *item, const DcmTagKey &key, double *out, unsigned long n,
                  const char *what, OFString *text = nullptr)
{
    if (get_doubles(item, key, out, n, text))
        return true;
    std::string s;
    if (!get_text(item, key, s) || s.find_first_not_of(' ') == std::string::npos)
        return false;
    if (s.size() > 64)
        s = s.substr(0, 64) + "...";
    fail(std::string(what) + " '" + s + "' is not " + std::to_string(n) + " finite number" +
         (n == 1 ? "" : "s"));
}

DcmItem *first_item(DcmItem *parent, const DcmTagKey &seq)
{
    DcmItem *item = nullptr;
    if (parent && parent->findAndGetSequenceItem(seq, item, 0).good())
        return item;
    return nullptr;
}

// Functional group macros of one frame: the per-frame item wins over the shared one.
struct frame_groups {
    DcmItem *per_frame = nullptr;
    DcmItem *shared = nullptr;

    DcmItem *macro(const DcmTagKey &seq) const
    {
        if (DcmItem *m = first_item(per_frame, seq))
            return m;
        return first_item(shared, seq);
    }
};

// Items of a sequence in order; walking with nextInContainer keeps this linear.
std::vector<DcmItem *> sequence_items(DcmItem *parent, const DcmTagKey &key)
{
    std::vector<DcmItem *> items;
    DcmSequenceOfItems *seq = nullptr;
    if (parent->findAndGetSequence(key, seq).bad() || !seq)
        return items;
    items.reserve(seq->card());
    for (DcmObject *o = seq->nextInContainer(nullptr); o; o = seq->nextInContainer(o))
        items.push_back(static_cast<DcmItem *>(o));
    return items;
}

// ---------------------------------------------------------------- native

size_t native_size(const pixel_format &f, size_t total)
{
    return f.bits_allocated == 1 ? (total + 7) / 8
                                 : total * static_cast<size_t>(f.stored_samples) *
                                       static_cast<size_t>(f.bits_allocated / 8);
}

void check_length(DcmPixelData *px, const pixel_format &f, size_t total)
{
    if (px->getLength() < native_size(f, total))
        fail("the pixel data is shorter than Rows x Columns x Number of Frames");
}

// Stored values, read by READ(i), through each frame's rescale into OUT.
// Into int16 with an integer slope and intercept the arithmetic is exact
// in integers; otherwise it is done in double, as for floats.
template <typename Read>
void convert_frames(const pixel_format &f, const std::vector<rescale> &rs, size_t per_frame,
                    pixel_out &out, Read read)
{
    const size_t frames = static_cast<size_t>(f.frames);
    if (rs.size() < frames)
        fail("no rescale for every frame");
    for (size_t k = 0; k < frames; k++) {
        const rescale &r = rs[k];
        const size_t base = k * per_frame;
        const bool integral = out.s && std::fabs(r.slope) <= 65536.0 &&
                              std::fabs(r.intercept) <= 2147483648.0 &&
                              r.slope == std::trunc(r.slope) &&
                              r.intercept == std::trunc(r.intercept);
        if (integral) {
            const int64_t slope = static_cast<int64_t>(r.slope);
            const int64_t intercept = static_cast<int64_t>(r.intercept);
            for (size_t i = 0; i < per_frame; i++) {
                const int64_t v = stored_value(read(base + i), f) * slope + intercept;
                if (v < -32768 || v > 32767) {
                    out.inexact = true;
                    return;
                }
                out.s[base + i] = static_cast<int16_t>(v);
            }
            continue;
        }
        for (size_t i = 0; i < per_frame; i++)
            out.put(base + i, static_cast<double>(stored_value(read(base + i), f)) * r.slope +
                                  r.intercept);
    }
}

// PX holds native pixel data (as read, or decoded by DCMTK).
void convert_native(DcmPixelData *px, const pixel_format &f, const std::vector<rescale> &rs,
                    bool big_endian_source, pixel_out &out)
{
    const DcmEVR vr = px->getTag().getEVR();
    Uint8 *bytes = nullptr;
    // getUint8Array hands out little endian bytes (it swaps OW words read big endian)
    OFCondition c = px->getUint8Array(bytes);
    const size_t length = px->getLength();
    if (c.bad() || (!bytes && length > 0))
        fail(std::string("cannot read the pixel data: ") + c.text());

    const size_t per_frame = static_cast<size_t>(f.rows) * static_cast<size_t>(f.cols);
    const size_t total = per_frame * static_cast<size_t>(f.frames);
    if (length < native_size(f, total))
        fail("the pixel data is shorter than Rows x Columns x Number of Frames");

    // One loop per sample width, each frame with its own rescale.
    switch (f.bits_allocated) {
    case 1: // frames are packed back to back, least significant bit first
        convert_frames(f, rs, per_frame, out,
                       [bytes](size_t i) -> uint32_t { return (bytes[i / 8] >> (i % 8)) & 1u; });
        break;
    case 8:
        convert_frames(f, rs, per_frame, out, [bytes](size_t i) -> uint32_t { return bytes[i]; });
        break;
    case 16:
        convert_frames(f, rs, per_frame, out, [bytes](size_t i) -> uint32_t {
            return static_cast<uint32_t>(bytes[2 * i]) |
                   static_cast<uint32_t>(bytes[2 * i + 1]) << 8;
        });
        break;
    default:
        convert_frames(f, rs, per_frame, out, [bytes, big_endian_source, vr](size_t i) {
            const uint8_t *b = bytes + 4 * i;
            if (!big_endian_source)
                return b[0] | b[1] << 8 | static_cast<uint32_t>(b[2]) << 16 |
                       static_cast<uint32_t>(b[3]) << 24;
            if (vr == EVR_OW) // DCMTK swapped 16-bit words only: halves are in file order
                return b[2] | b[3] << 8 | static_cast<uint32_t>(b[0]) << 16 |
                       static_cast<uint32_t>(b[1]) << 24;
            // OB: bytes exactly as in the big endian file
            return b[3] | b[2] << 8 | static_cast<uint32_t>(b[1]) << 16 |
                   static_cast<uint32_t>(b[0]) << 24;
        });
        break;
    }
}

// ---------------------------------------------------------------- geometry

void cross(const double *a, const double *b, double *out)
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

// A DS value (at most 16 characters) for a computed coordinate.
OFString ds_text(double v)
{
    char buf[32];
    for (int prec = 10; prec >= 1; prec--) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (std::strlen(buf) <= 16)
            break;
    }
    return buf;
}

// A number for a message, as a DS would write it.
std::string num(double v) { return ds_text(v).c_str(); }

std::vector<frame_groups> functional_groups(DcmItem *ds, long frames)
{
    // Per-frame functional groups (enhanced multi-frame); empty items elsewhere.
    std::vector<frame_groups> fg(static_cast<size_t>(frames));
    DcmItem *shared = first_item(ds, DCM_SharedFunctionalGroupsSequence);
    std::vector<DcmItem *> per = sequence_items(ds, DCM_PerFrameFunctionalGroupsSequence);
    for (size_t k = 0; k < fg.size(); k++) {
        fg[k].shared = shared;
        fg[k].per_frame = k < per.size() ? per[k] : nullptr;
    }
    return fg;
}

std::vector<frame_geometry> geometry_of(DcmItem *ds, const std::vector<frame_groups> &fg)
{
    const size_t frames = fg.size();
    std::vector<frame_geometry> geom(frames);

    frame_geometry top;
    top.has_iop = get_geometry(ds, DCM_ImageOrientationPatient, top.iop, 6,
                               "Image Orientation (Patient)", top.iop_text);
    top.has_ipp = get_geometry(ds, DCM_ImagePositionPatient, top.ipp, 3,
                               "Image Position (Patient)", top.ipp_text);
    OFString sp[2], th;
    top.has_spacing = get_geometry(ds, DCM_PixelSpacing, top.spacing, 2, "Pixel Spacing", sp);
    if (top.has_spacing)
        top.spacing_text = sp[0] + "\\" + sp[1];
    if (get_doubles(ds, DCM_SliceThickness, &top.thickness, 1, &th) && top.thickness > 0)
        top.thickness_text = th;
    else
        top.thickness = 0;

    // Classic multi-frame (RT Dose): planes offset along the normal.
    std::vector<double> offsets(frames);
    const bool have_offsets = frames > 1 && top.has_iop && top.has_ipp &&
                              get_geometry(ds, DCM_GridFrameOffsetVector, offsets.data(),
                                           static_cast<unsigned long>(frames),
                                           "Grid Frame Offset Vector");
    if (have_offsets)
        for (double v : offsets)
            if (std::fabs(v) > LIMIT_MAX_POSITION_MM)
                fail("Grid Frame Offset Vector value " + num(v) + " is beyond " +
                     num(LIMIT_MAX_POSITION_MM) + " mm");

    for (size_t k = 0; k < frames; k++) {
        frame_geometry &g = geom[k];
        const frame_groups &f = fg[k];
        g.has_iop = get_geometry(f.macro(DCM_PlaneOrientationSequence),
                                 DCM_ImageOrientationPatient, g.iop, 6,
                                 "Image Orientation (Patient)", g.iop_text);
        if (!g.has_iop && top.has_iop) {
            std::copy(top.iop, top.iop + 6, g.iop);
            std::copy(top.iop_text, top.iop_text + 6, g.iop_text);
            g.has_iop = true;
        }
        DcmItem *pm = f.macro(DCM_PixelMeasuresSequence);
        g.has_spacing = get_geometry(pm, DCM_PixelSpacing, g.spacing, 2, "Pixel Spacing", sp);
        if (g.has_spacing) {
            g.spacing_text = sp[0] + "\\" + sp[1];
        } else if (top.has_spacing) {
            std::copy(top.spacing, top.spacing + 2, g.spacing);
            g.spacing_text = top.spacing_text;
            g.has_spacing = true;
        }
        if (get_doubles(pm, DCM_SliceThickness, &g.thickness, 1, &th) && g.thickness > 0) {
            g.thickness_text = th;
        } else {
            g.thickness = top.thickness;
            g.thickness_text = top.thickness_text;
        }
        g.has_ipp = get_geometry(f.macro(DCM_PlanePositionSequence), DCM_ImagePositionPatient,
                                 g.ipp, 3, "Image Position (Patient)", g.ipp_text);
        if (g.has_ipp)
            continue;
        if (top.has_ipp && frames == 1) {
            std::copy(top.ipp, top.ipp + 3, g.ipp);
            std::copy(top.ipp_text, top.ipp_text + 3, g.ipp_text);
            g.has_ipp = true;
        } else if (have_offsets && g.has_iop) {
            // Relative offsets (first value 0) and absolute z (first value =
            // IPP z, axial only) both reduce to this.
            double n[3];
            cross(g.iop, g.iop + 3, n);
            const double d = offsets[k] - offsets[0];
            for (int j = 0; j < 3; j++) {
                g.ipp[j] = top.ipp[j] + d * n[j];
                g.ipp_text[j] = ds_text(g.ipp[j]);
            }
            g.has_ipp = true;
        }
    }
    return geom;
}

// Every value of GEOM in range, or a refusal naming it (frame K+1). The
// volume assembly checks again; here a file is refused before its pixels
// are decoded.
void check_geometry(const std::vector<frame_geometry> &geom)
{
    for (size_t k = 0; k < geom.size(); k++) {
        const frame_geometry &g = geom[k];
        const std::string where = geom.size() > 1 ? " (frame " + std::to_string(k + 1) + ")" : "";
        if (g.has_ipp)
            for (double v : g.ipp)
                if (std::fabs(v) > LIMIT_MAX_POSITION_MM)
                    fail("Image Position (Patient) " + num(v) + where + " is beyond " +
                         num(LIMIT_MAX_POSITION_MM) + " mm");
        if (g.has_iop) {
            const double *r = g.iop, *c = g.iop + 3;
            const double rr = r[0] * r[0] + r[1] * r[1] + r[2] * r[2];
            const double cc = c[0] * c[0] + c[1] * c[1] + c[2] * c[2];
            const double rc = r[0] * c[0] + r[1] * c[1] + r[2] * c[2];
            if (std::fabs(rr - 1) > LIMIT_ORIENTATION_TOLERANCE ||
                std::fabs(cc - 1) > LIMIT_ORIENTATION_TOLERANCE ||
                std::fabs(rc) > LIMIT_ORIENTATION_TOLERANCE)
                fail("Image Orientation (Patient)" + where +
                     " is not two orthogonal unit vectors");
        }
        if (g.has_spacing)
            for (double v : g.spacing)
                if (!(v > 0) || v > LIMIT_MAX_SPACING_MM)
                    fail("Pixel Spacing " + num(v) + where + " is not in (0, " +
                         num(LIMIT_MAX_SPACING_MM) + "] mm");
    }
}

// The image's view of the geometry: all frames placed, or none.
void fill_geometry(const std::vector<frame_geometry> &geom, dicom_image *img)
{
    bool ok = true;
    for (const frame_geometry &g : geom)
        ok = ok && g.complete();
    // Pixel spacing: one value for the image, from the first frame; kept
    // even when the plane is unknown (projection images).
    img->pixel_spacing[0] = geom[0].has_spacing ? geom[0].spacing[0] : 0;
    img->pixel_spacing[1] = geom[0].has_spacing ? geom[0].spacing[1] : 0;
    img->has_geometry = ok ? 1 : 0;
    if (!ok) // no half-filled planes
        return;
    for (size_t k = 0; k < geom.size(); k++) {
        std::copy(geom[k].ipp, geom[k].ipp + 3, img->positions + 3 * k);
        std::copy(geom[k].iop, geom[k].iop + 6, img->orientations + 6 * k);
    }
}

std::vector<rescale> read_rescale(DcmDataset *ds, const std::vector<frame_groups> &fg)
{
    rescale top;
    get_doubles(ds, DCM_RescaleSlope, &top.slope, 1);
    get_doubles(ds, DCM_RescaleIntercept, &top.intercept, 1);
    std::vector<rescale> rs(fg.size(), top);
    for (size_t k = 0; k < fg.size(); k++) {
        DcmItem *m = fg[k].macro(DCM_PixelValueTransformationSequence);
        if (!m)
            continue;
        get_doubles(m, DCM_RescaleSlope, &rs[k].slope, 1);
        get_doubles(m, DCM_RescaleIntercept, &rs[k].intercept, 1);
    }
    return rs;
}

// Decoded pixels get pages of their own rather than heap memory. A job
// frees them once the volume has its copy while the files' small headers
// stay; from the heap (whose mmap threshold the node raises for model
// tensors) they would leave a hole per file between live headers that no
// later large buffer can reuse: measured +330 MiB peak on a 400-slice CT.
size_t pixel_bytes(const dicom_image *img)
{
    size_t n = 0;
    if (!size_mul3_ok(static_cast<size_t>(img->rows), static_cast<size_t>(img->cols),
                      static_cast<size_t>(img->frames), &n) ||
        !size_mul_ok(n, sizeof(float), &n))
        return 0; // never reached: read_header capped the size
    return n;
}

float *alloc_pixels(const dicom_image *img)
{
    size_t n = pixel_bytes(img);
    void *p = n ? mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                : MAP_FAILED;
    if (p == MAP_FAILED)
        throw std::bad_alloc();
    return static_cast<float *>(p);
}

void free_pixels(dicom_image *img)
{
    if (img->pixels)
        munmap(img->pixels, pixel_bytes(img));
    img->pixels = nullptr;
}

void free_image(dicom_image *img)
{
    if (!img)
        return;
    free_pixels(img);
    free(img->positions);
    free(img->orientations);
    free(img);
}

struct image_holder {
    dicom_image *img = nullptr;
    ~image_holder() { free_image(img); }
    dicom_image *release()
    {
        dicom_image *p = img;
        img = nullptr;
        return p;
    }
};

// ---------------------------------------------------------------- headers

// What the header of an image says it holds, checked before any pixel is
// read: the pixel format, the encoding and, for encapsulated data, the
// fragments.
struct image_header {
    pixel_format f;
    E_TransferSyntax xfer = EXS_Unknown;
    DcmPixelData *px = nullptr;
    DcmPixelSequence *seq = nullptr; // encapsulated data only
    size_t total = 0;                // Rows x Columns x Frames
};

// Reads and checks the header of DS (SOP_CLASS names it in messages):
// a file that is no image, or claims more than common/limits.h allows,
// is refused here, from its header alone. Colour images (RGB, YBR,
// palette) pass only with COLOUR_OK: they are rendered (render.cpp), never
// decoded to values.
image_header read_header(DcmDataset *ds, const std::string &sop_class, bool colour_ok = false)
{
    image_header h;
    DcmElement *elem = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, elem).bad() || !elem) {
        std::string what = sop_class.empty() ? "unknown" : sop_class;
        const char *name = sop_class.empty() ? nullptr : dcmFindNameOfUID(sop_class.c_str(), nullptr);
        if (name)
            what += std::string(" ") + name;
        if (ds->tagExists(DCM_FloatPixelData) || ds->tagExists(DCM_DoubleFloatPixelData))
            fail("float pixel data is not supported (SOP class " + what + ")");
        fail("no pixel data (not an image: SOP class " + what + ")");
    }
    h.px = dynamic_cast<DcmPixelData *>(elem);
    if (!h.px)
        fail("the pixel data element has an unexpected type");

    const long spp = get_us(ds, DCM_SamplesPerPixel, 1);
    if (spp != 1 && !(colour_ok && spp == 3))
        fail("colour images are not supported (" + std::to_string(spp) + " samples per pixel)");

    // Palette indices and Modality LUT Sequence values would pass for real values.
    if (!colour_ok && get_string(ds, DCM_PhotometricInterpretation) == "PALETTE COLOR")
        fail("colour images are not supported (PALETTE COLOR)");
    if (ds->tagExists(DCM_ModalityLUTSequence))
        fail("a Modality LUT Sequence is not supported (only Rescale Slope/Intercept)");

    pixel_format &f = h.f;
    f.samples = f.stored_samples = spp;
    if (spp == 3 && get_string(ds, DCM_PhotometricInterpretation) == "YBR_FULL_422")
        f.stored_samples = 2;
    f.rows = get_us(ds, DCM_Rows, 0);
    f.cols = get_us(ds, DCM_Columns, 0);
    f.bits_allocated = get_us(ds, DCM_BitsAllocated, 0);
    f.bits_stored = get_us(ds, DCM_BitsStored, f.bits_allocated);
    f.pixel_rep = get_us(ds, DCM_PixelRepresentation, 0);
    if (f.rows <= 0 || f.cols <= 0)
        fail("Rows or Columns missing or zero");
    if (f.bits_allocated != 1 && f.bits_allocated != 8 && f.bits_allocated != 16 &&
        f.bits_allocated != 32)
        fail("Bits Allocated " + std::to_string(f.bits_allocated) + " is not supported");
    if (f.bits_stored < 1 || f.bits_stored > f.bits_allocated)
        fail("Bits Stored " + std::to_string(f.bits_stored) + " does not fit Bits Allocated " +
             std::to_string(f.bits_allocated));
    if (f.pixel_rep != 0 && f.pixel_rep != 1)
        fail("invalid Pixel Representation " + std::to_string(f.pixel_rep));
    if (ds->tagExists(DCM_NumberOfFrames)) {
        std::string s = get_string(ds, DCM_NumberOfFrames);
        char *end = nullptr;
        errno = 0;
        long n = strtol(s.c_str(), &end, 10);
        while (end && *end == ' ')
            end++;
        if (s.empty() || errno || !end || *end || n < 1 || n > 0x7FFFFFFF)
            fail("invalid Number of Frames '" + s.substr(0, 16) + "'");
        // Each frame costs its geometry and functional groups whatever its size.
        if (n > LIMIT_MAX_FRAMES)
            fail("Number of Frames " + std::to_string(n) + " is over the limit of " +
                 std::to_string(LIMIT_MAX_FRAMES));
        f.frames = n;
    }
    size_t plane = 0;
    if (!size_mul_ok(static_cast<size_t>(f.rows), static_cast<size_t>(f.cols), &plane) ||
        plane > LIMIT_MAX_FRAME_PIXELS)
        fail("a frame of " + std::to_string(f.cols) + " x " + std::to_string(f.rows) +
             " pixels is over the limit of " + std::to_string(LIMIT_MAX_FRAME_PIXELS) +
             " pixels");
    if (!size_mul3_ok(static_cast<size_t>(f.rows), static_cast<size_t>(f.cols),
                      static_cast<size_t>(f.frames), &h.total) ||
        h.total > LIMIT_MAX_IMAGE_PIXELS)
        fail("an image of " + std::to_string(f.cols) + " x " + std::to_string(f.rows) + " x " +
             std::to_string(f.frames) + " pixels is over the limit of " +
             std::to_string(LIMIT_MAX_IMAGE_PIXELS) + " pixels");

    // A frame count the pixel data cannot hold is refused before any allocation.
    h.xfer = ds->getOriginalXfer();
    const DcmXfer x(h.xfer);
    if (x.isEncapsulated()) {
        if (h.px->getEncapsulatedRepresentation(h.xfer, nullptr, h.seq).bad() || !h.seq)
            fail(std::string("the pixel data is not encapsulated as ") + x.getXferName() + " requires");
        const unsigned long items = h.seq->card();
        if (items < 2 || static_cast<unsigned long>(f.frames) > items - 1)
            fail("the encapsulated pixel data holds fewer fragments than Number of Frames");
        if (items - 1 > LIMIT_MAX_FRAGMENTS)
            fail("the encapsulated pixel data holds " + std::to_string(items - 1) +
                 " fragments, over the limit of " + std::to_string(LIMIT_MAX_FRAGMENTS));
    } else {
        check_length(h.px, f, h.total);
    }
    return h;
}

std::string sop_class_of(DcmDataset *ds, DcmMetaInfo *meta)
{
    std::string sop_class = get_string(ds, DCM_SOPClassUID);
    if (sop_class.empty() && meta)
        sop_class = get_string(meta, DCM_MediaStorageSOPClassUID);
    return sop_class;
}

// The image DS holds, from its header alone: size, identity and the
// geometry of each frame (GEOM), every value checked; no pixels yet.
dicom_image *inspect_image(DcmDataset *ds, DcmMetaInfo *meta, std::vector<frame_geometry> &geom,
                           bool colour_ok = false)
{
    const std::string sop_class = sop_class_of(ds, meta);
    const image_header h = read_header(ds, sop_class, colour_ok);
    const pixel_format &f = h.f;
    const std::vector<frame_groups> fg = functional_groups(ds, f.frames);
    geom = geometry_of(ds, fg);
    check_geometry(geom);

    image_holder hold;
    hold.img = static_cast<dicom_image *>(calloc(1, sizeof(dicom_image)));
    if (!hold.img)
        throw std::bad_alloc();
    dicom_image *img = hold.img;
    img->rows = static_cast<int>(f.rows);
    img->cols = static_cast<int>(f.cols);
    img->frames = static_cast<int>(f.frames);
    copy_field(img->sop_class_uid, sizeof img->sop_class_uid, sop_class);
    copy_field(img->modality, sizeof img->modality, get_string(ds, DCM_Modality));
    copy_field(img->image_type, sizeof img->image_type, get_string(ds, DCM_ImageType));
    copy_field(img->photometric, sizeof img->photometric,
               get_string(ds, DCM_PhotometricInterpretation));
    img->samples = static_cast<int>(f.samples);
    img->positions = static_cast<double *>(calloc(static_cast<size_t>(f.frames) * 3, sizeof(double)));
    img->orientations = static_cast<double *>(calloc(static_cast<size_t>(f.frames) * 6, sizeof(double)));
    if (!img->positions || !img->orientations)
        throw std::bad_alloc();
    fill_geometry(geom, img);
    return hold.release();
}

// Decodes the pixels of DS (inspected into IMG before) into INTO
// (frames x rows x cols floats), or as int16 into INTO16 (DICOM_ERANGE
// when a value does not fit), or into pages of IMG's own when both are null.
void decode_pixels(DcmDataset *ds, dicom_image *img, float *into = nullptr,
                   int16_t *into16 = nullptr)
{
    const image_header h = read_header(ds, img->sop_class_uid);
    const pixel_format &f = h.f;
    const std::vector<rescale> rs = read_rescale(ds, functional_groups(ds, f.frames));
    const DcmXfer x(h.xfer);
    // The output exists only once the data was checked.
    auto target = [&] {
        pixel_out out;
        if (into16)
            out.s = into16;
        else
            out.f = into ? into : (img->pixels = alloc_pixels(img));
        return out;
    };
    pixel_out out;
    if (x.isEncapsulated() && is_j2k_xfer(x)) {
        out = target();
        decode_j2k(h.seq, f, rs, out);
    } else {
        if (x.isEncapsulated()) {
            // The codec sizes its buffers from the codestream, not from Rows
            // and Columns: its frame headers must agree with them first.
            if (is_jpeg_xfer(x))
                check_jpeg_frames(h.seq, f, is_jpegls_xfer(x) ? "JPEG-LS" : "JPEG");
            register_decoders();
            OFCondition c = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
            if (c.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit))
                fail(std::string("cannot decode ") + x.getXferName() + " (" + x.getXferID() +
                     "): " + c.text());
            check_length(h.px, f, h.total);
        }
        out = target();
        convert_native(h.px, f, rs, !x.isEncapsulated() && x.isBigEndian(), out);
    }
    if (out.inexact)
        throw image_error("its values after the Modality LUT are not all integers within "
                          "-32768..32767",
                          DICOM_ERANGE);
}

// Decodes the image FF holds; GEOM gets the geometry of each frame.
dicom_image *decode_image(DcmFileFormat &ff, std::vector<frame_geometry> &geom)
{
    image_holder h;
    h.img = inspect_image(ff.getDataset(), ff.getMetaInfo(), geom);
    decode_pixels(ff.getDataset(), h.img);
    return h.release();
}

// The most a deflated file may inflate to: its largest allowed image at 8
// bytes a pixel, and room for the rest of its data set.
const uint64_t kInflateLimit = (uint64_t)LIMIT_MAX_IMAGE_PIXELS * 8 + ((uint64_t)64 << 20);

// Reads the file at PATH into FF, large values left on disk. A deflated
// one is read through an inflated copy on disk, never inflated in memory
// (deflate.cpp): KEEP then holds that copy, and must outlive the data set,
// which still loads its large values from it.
void load(DcmFileFormat &ff, const char *path, std::shared_ptr<ainode_dicom::FdGuard> &keep)
{
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_metaOnly);
    OFString ts;
    if (c.good())
        ff.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, ts);
    if (c.good() && ts == UID_DeflatedExplicitVRLittleEndianTransferSyntax) {
        keep = std::make_shared<ainode_dicom::FdGuard>();
        c = ainode_dicom::inflate_to_temp(path, kInflateLimit, *keep);
        if (c == ainode_dicom::EC_InflatedTooLarge)
            fail("the deflated data set inflates to more than " +
                 std::to_string(kInflateLimit >> 20) + " MiB");
        if (c.good()) {
            char plain[64];
            std::snprintf(plain, sizeof plain, "/proc/self/fd/%d", keep->fd);
            c = ff.getDataset()->loadFile(plain, EXS_LittleEndianExplicit, EGL_noChange,
                                          DCM_MaxReadLength);
        }
    } else {
        c = ff.loadFile(path); // also a file without a meta header
    }
    if (c.bad())
        fail_io(std::string("cannot read the DICOM file: ") + c.text());
}

dicom_image *read_image(const char *path)
{
    std::shared_ptr<ainode_dicom::FdGuard> keep;
    DcmFileFormat ff;
    load(ff, path, keep);
    std::vector<frame_geometry> geom;
    return decode_image(ff, geom);
}

std::string uid_of(DcmItem *ds, const DcmTagKey &key)
{
    std::string s = get_string(ds, key);
    return s;
}

// What a source set has taken so far: the limits hold for the whole set.
struct set_totals {
    size_t max_pixels = 0; // 0: no limit of the set's own
    size_t pixels = 0;
    size_t frames = 0;
};

// Parses the file at PATH into SF: its header read and checked, counted
// against the set's totals before its frames' geometry is read, and kept
// whole; its pixel data stays in the file (DCMTK loads large values only
// when asked) until decode_source.
void parse_source(const char *path, ainode_dicom::source_file &sf, set_totals &t)
{
    DcmFileFormat ff;
    load(ff, path, sf.inflated);
    sf.path = path;
    DcmDataset *ds = ff.getDataset();
    // Colour passes here: an image model renders it; decoding refuses it.
    const image_header h = read_header(ds, sop_class_of(ds, ff.getMetaInfo()), true);
    if (!size_add_ok(t.pixels, h.total, &t.pixels) || (t.max_pixels && t.pixels > t.max_pixels))
        fail("the series holds more than " + std::to_string(t.max_pixels) +
             " pixels (Rows x Columns x Frames), the limit of one job");
    t.frames += static_cast<size_t>(h.f.frames);
    if (t.frames > static_cast<size_t>(LIMIT_MAX_FRAMES))
        fail("the series holds more than " + std::to_string(LIMIT_MAX_FRAMES) + " frames");
    sf.image = inspect_image(ds, ff.getMetaInfo(), sf.geom, true);
    sf.sop_class = uid_of(ds, DCM_SOPClassUID).c_str();
    sf.sop_instance = uid_of(ds, DCM_SOPInstanceUID).c_str();
    sf.study = uid_of(ds, DCM_StudyInstanceUID).c_str();
    sf.series = uid_of(ds, DCM_SeriesInstanceUID).c_str();
    sf.frame_of_ref = uid_of(ds, DCM_FrameOfReferenceUID).c_str();
    sf.patient_id = get_string(ds, DCM_PatientID).c_str();
    sf.multiframe = ds->tagExists(DCM_NumberOfFrames);
    sf.header.reset(ff.getAndRemoveDataset());
}

// Decodes the pixels of a parsed file, then keeps its header alone.
void decode_source(ainode_dicom::source_file &sf, float *into = nullptr,
                   int16_t *into16 = nullptr)
{
    if (sf.decoded) {
        if (into || into16)
            fail("its pixels were decoded before"); // and their encoded form is gone
        return;
    }
    decode_pixels(sf.header.get(), sf.image, into, into16);
    sf.decoded = true;
    // The pixels are decoded: their encoded form (and a decompressed copy
    // DCMTK may hold) goes now, so that a series costs its floats and
    // small headers only.
    sf.header->findAndDeleteElement(DCM_PixelData);
}

int fail_to(char *err, size_t errlen, const std::string &prefix)
{
    try {
        throw;
    } catch (const image_error &e) {
        return copy_err(err, errlen, prefix + e.what(), e.code);
    } catch (const std::bad_alloc &) {
        return copy_err(err, errlen, prefix + "out of memory decoding the image", DICOM_ENOMEM);
    } catch (const std::exception &e) {
        return copy_err(err, errlen, prefix + "cannot decode the image: " + e.what(),
                        DICOM_EFORMAT);
    } catch (...) {
        return copy_err(err, errlen, prefix + "cannot decode the image", DICOM_EFORMAT);
    }
}

} // namespace

void ainode_dicom::register_decoders()
{
    // DCMTK's codec list is global; registering twice would add duplicates.
    static std::once_flag once;
    std::call_once(once, [] {
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
    });
}

std::vector<frame_geometry> ainode_dicom::read_geometry(DcmItem *ds, long frames)
{
    return geometry_of(ds, functional_groups(ds, frames < 1 ? 1 : frames));
}

extern "C" int dicom_image_read(const char *path, struct dicom_image **out, char *err,
                                size_t errlen)
{
    if (out)
        *out = nullptr;
    if (!path || !out)
        return copy_err(err, errlen, "invalid arguments", DICOM_EINVAL);
    try {
        *out = read_image(path);
        return 0;
    } catch (...) {
        return fail_to(err, errlen, "");
    }
}

extern "C" void dicom_image_free(struct dicom_image *img) { free_image(img); }

extern "C" int dicom_sources_parse(const char *const *paths, size_t n, size_t max_pixels,
                                   struct dicom_sources **out, char *err, size_t errlen)
{
    *out = nullptr;
    if (!paths || n == 0)
        return copy_err(err, errlen, "no source files", DICOM_EINVAL);
    dicom_sources *s = new (std::nothrow) dicom_sources;
    if (!s)
        return copy_err(err, errlen, "out of memory", DICOM_ENOMEM);
    size_t i = 0;
    set_totals totals;
    totals.max_pixels = max_pixels;
    try {
        s->files.resize(n);
        for (; i < n; i++)
            parse_source(paths[i], s->files[i], totals);
    } catch (...) {
        // The instance's place in the series, not its path: the path names
        // its study, series and SOP Instance UIDs, and this text is logged.
        int rc = fail_to(err, errlen,
                         "instance " + std::to_string(i + 1) + " (of " + std::to_string(n) +
                             "): ");
        dicom_sources_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

extern "C" int dicom_sources_decode(struct dicom_sources *s, char *err, size_t errlen)
{
    size_t i = 0;
    try {
        for (; i < s->files.size(); i++)
            decode_source(s->files[i]);
    } catch (...) {
        return fail_to(err, errlen,
                       "instance " + std::to_string(i + 1) + " (of " +
                           std::to_string(s->files.size()) + "): ");
    }
    return 0;
}

namespace {

// File I of S into INTO (floats) or INTO16 (int16), CAPACITY values.
int decode_file_into(struct dicom_sources *s, size_t i, float *into, int16_t *into16,
                     size_t capacity, char *err, size_t errlen)
{
    const size_t n = s->files.size();
    try {
        if (i >= n || (!into && !into16))
            return copy_err(err, errlen, "invalid arguments", DICOM_EINVAL);
        const dicom_image *img = s->files[i].image;
        if (pixel_bytes(img) / sizeof(float) > capacity)
            return copy_err(err, errlen, "the decoded image does not fit its buffer",
                            DICOM_EINVAL);
        decode_source(s->files[i], into, into16);
    } catch (...) {
        return fail_to(err, errlen,
                       "instance " + std::to_string(i + 1) + " (of " + std::to_string(n) + "): ");
    }
    return 0;
}

} // namespace

extern "C" int dicom_sources_decode_into(struct dicom_sources *s, size_t i, float *out,
                                         size_t capacity, char *err, size_t errlen)
{
    return out ? decode_file_into(s, i, out, nullptr, capacity, err, errlen)
               : copy_err(err, errlen, "invalid arguments", DICOM_EINVAL);
}

extern "C" int dicom_sources_decode_into_int16(struct dicom_sources *s, size_t i, int16_t *out,
                                               size_t capacity, char *err, size_t errlen)
{
    return out ? decode_file_into(s, i, nullptr, out, capacity, err, errlen)
               : copy_err(err, errlen, "invalid arguments", DICOM_EINVAL);
}

extern "C" int dicom_sources_open(const char *const *paths, size_t n,
                                  struct dicom_sources **out, char *err, size_t errlen)
{
    int rc = dicom_sources_parse(paths, n, 0, out, err, errlen);
    if (rc != 0)
        return rc;
    rc = dicom_sources_decode(*out, err, errlen);
    if (rc != 0) {
        dicom_sources_close(*out);
        *out = nullptr;
    }
    return rc;
}

extern "C" size_t dicom_sources_count(const struct dicom_sources *s) { return s->files.size(); }

extern "C" const struct dicom_image *dicom_sources_image(const struct dicom_sources *s, size_t i)
{
    return i < s->files.size() ? s->files[i].image : nullptr;
}

extern "C" void dicom_sources_drop_pixels(struct dicom_sources *s)
{
    for (auto &f : s->files)
        if (f.image)
            free_pixels(f.image);
}

extern "C" void dicom_sources_close(struct dicom_sources *s)
{
    if (!s)
        return;
    for (auto &f : s->files)
        free_image(f.image);
    delete s;
}
