// Pixel decoding: stored values -> float after the Modality LUT, plus the
// geometry of every frame. Native, deflated, RLE, JPEG and JPEG-LS data go
// through DCMTK; JPEG 2000 through OpenJPEG (Debian's DCMTK has no J2K codec).

#include "dicom/image.h"
#include "dicom/internal.h"

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

#include <openjpeg.h>
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

using ainode_dicom::copy_err;
using ainode_dicom::frame_geometry;
using ainode_dicom::register_decoders;

struct image_error : std::runtime_error {
    int code;
    image_error(const std::string &m, int c) : std::runtime_error(m), code(c) {}
};

[[noreturn]] void fail(const std::string &msg) { throw image_error(msg, DICOM_EFORMAT); }
[[noreturn]] void fail_io(const std::string &msg) { throw image_error(msg, DICOM_EIO); }

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

// ---------------------------------------------------------------- codestream headers
//
// A codec allocates what its codestream's own header claims, whatever Rows
// and Columns say: a few bytes can ask for gigabytes. Each frame's header is
// read here, bounds-checked byte by byte, and must agree with the DICOM
// header (already under the size cap) before the codec sees the frame.

uint32_t be16(const uint8_t *p) { return static_cast<uint32_t>(p[0]) << 8 | p[1]; }
uint32_t be32(const uint8_t *p)
{
    return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
           static_cast<uint32_t>(p[2]) << 8 | p[3];
}

std::string dims(uint64_t w, uint64_t h)
{
    return std::to_string(w) + "x" + std::to_string(h);
}

// The codestream of a frame: bare, or the contiguous codestream box of a
// JP2 file (some writers wrap it).
const uint8_t *j2k_codestream(const uint8_t *d, size_t n, size_t &len, const std::string &where)
{
    static const uint8_t jp2_sig[12] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50,
                                        0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};
    if (n < sizeof jp2_sig || memcmp(d, jp2_sig, sizeof jp2_sig) != 0) {
        len = n;
        return d;
    }
    size_t pos = 0;
    while (n - pos >= 8) {
        uint64_t box = be32(d + pos), header = 8;
        const uint32_t type = be32(d + pos + 4);
        if (box == 1) { // 64-bit length
            if (n - pos < 16)
                break;
            box = static_cast<uint64_t>(be32(d + pos + 8)) << 32 | be32(d + pos + 12);
            header = 16;
        } else if (box == 0) { // up to the end
            box = n - pos;
        }
        if (box < header || box > n - pos)
            break;
        if (type == 0x6A703263) { // 'jp2c'
            len = static_cast<size_t>(box - header);
            return d + pos + header;
        }
        pos += static_cast<size_t>(box);
    }
    fail(where + ": no codestream in its JP2 wrapper");
}

// The SIZ marker segment (ISO 15444-1 A.5.1) right after SOC: image and
// tile sizes and components, against Rows, Columns and one sample.
void check_j2k_size(const uint8_t *data, size_t size, const pixel_format &f, long frame)
{
    const std::string where = "JPEG 2000 frame " + std::to_string(frame + 1);
    size_t n = 0;
    const uint8_t *d = j2k_codestream(data, size, n, where);
    // SOC, SIZ, Lsiz .. Csiz (38 bytes), then 3 bytes per component.
    if (n < 45 || be16(d) != 0xFF4F || be16(d + 2) != 0xFF51)
        fail(where + ": no SIZ marker at the start of the codestream");
    const uint32_t xsiz = be32(d + 8), ysiz = be32(d + 12), xo = be32(d + 16), yo = be32(d + 20);
    const uint32_t xt = be32(d + 24), yt = be32(d + 28), xto = be32(d + 32), yto = be32(d + 36);
    const uint32_t csiz = be16(d + 40);
    if (xo >= xsiz || yo >= ysiz || xt == 0 || yt == 0 || xto > xo || yto > yo)
        fail(where + ": invalid image or tile size in its SIZ marker");
    const uint64_t w = xsiz - xo, h = ysiz - yo;
    if (w != static_cast<uint64_t>(f.cols) || h != static_cast<uint64_t>(f.rows))
        fail(where + ": the codestream claims " + dims(w, h) + " pixels where Columns x Rows is " +
             dims(static_cast<uint64_t>(f.cols), static_cast<uint64_t>(f.rows)));
    if (csiz != 1)
        fail("colour images are not supported (JPEG 2000 data with " + std::to_string(csiz) +
             " components)");
    if (d[43] != 1 || d[44] != 1)
        fail(where + ": subsampled components are not supported");
    // Each tile costs the codec its own structures, whatever its size.
    const uint64_t tiles = ((static_cast<uint64_t>(xsiz) - xto + xt - 1) / xt) *
                           ((static_cast<uint64_t>(ysiz) - yto + yt - 1) / yt);
    if (tiles > 65535)
        fail(where + ": " + std::to_string(tiles) + " tiles (at most 65535)");
}

bool is_jpeg_xfer(const DcmXfer &x)
{
    // JPEG (ISO 10918) and JPEG-LS: 1.2.840.10008.1.2.4.50 to .81.
    const char *uid = x.getXferID();
    static const char prefix[] = "1.2.840.10008.1.2.4.";
    if (!uid || strncmp(uid, prefix, sizeof prefix - 1) != 0)
        return false;
    const long n = strtol(uid + sizeof prefix - 1, nullptr, 10);
    return n >= 50 && n <= 81;
}

bool is_jpegls_xfer(const DcmXfer &x)
{
    // JPEG-LS lossless and near-lossless: 1.2.840.10008.1.2.4.80 and .81.
    const char *uid = x.getXferID();
    return uid &&
           (!strcmp(uid, "1.2.840.10008.1.2.4.80") || !strcmp(uid, "1.2.840.10008.1.2.4.81"));
}

// The frame header (SOFn, or SOF55 for JPEG-LS) of the CODEC stream in D.
void check_jpeg_header(const uint8_t *d, size_t n, const pixel_format &f, size_t frame,
                       const char *codec)
{
    const std::string where = std::string(codec) + " frame " + std::to_string(frame + 1);
    size_t pos = 2; // after SOI
    while (pos + 4 <= n) {
        if (d[pos] != 0xFF)
            break;
        const uint8_t m = d[pos + 1];
        if (m == 0xFF) { // fill byte
            pos++;
            continue;
        }
        const bool sof = (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) ||
                         m == 0xF7;
        if (sof) {
            if (pos + 10 > n)
                break;
            const uint32_t y = be16(d + pos + 5), x = be16(d + pos + 7), nf = d[pos + 9];
            if (x != static_cast<uint32_t>(f.cols) || y != static_cast<uint32_t>(f.rows))
                fail(where + ": the codestream claims " + dims(x, y) +
                     " pixels where Columns x Rows is " +
                     dims(static_cast<uint64_t>(f.cols), static_cast<uint64_t>(f.rows)));
            if (nf != 1)
                fail("colour images are not supported (JPEG data with " + std::to_string(nf) +
                     " components)");
            return;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { // no length
            pos += 2;
            continue;
        }
        if (m == 0xDA || m == 0xD9) // scan or end before any frame header
            break;
        const size_t len = be16(d + pos + 2);
        if (len < 2)
            break;
        pos += 2 + len;
    }
    fail(where + ": no frame header (SOF) in its first fragment");
}

// Every fragment that starts a JPEG stream (SOI) starts a frame.
void check_jpeg_frames(DcmPixelSequence *seq, const pixel_format &f, const char *codec)
{
    size_t frame = 0;
    const unsigned long items = seq->card();
    for (unsigned long i = 1; i < items; i++) {
        DcmPixelItem *item = nullptr;
        Uint8 *bytes = nullptr;
        if (seq->getItem(item, i).bad() || !item)
            fail("cannot read a JPEG fragment");
        const Uint32 len = item->getLength();
        if (len < 2)
            continue;
        if (item->getUint8Array(bytes).bad() || !bytes)
            fail("cannot read a JPEG fragment");
        if (bytes[0] != 0xFF || bytes[1] != 0xD8)
            continue;
        check_jpeg_header(bytes, len, f, frame++, codec);
    }
    if (frame < static_cast<size_t>(f.frames))
        fail("the pixel data holds " + std::to_string(frame) + " JPEG streams for " +
             std::to_string(f.frames) + " frames");
}

// ---------------------------------------------------------------- JPEG 2000

struct mem_stream {
    const uint8_t *data;
    size_t size;
    size_t pos;
};

OPJ_SIZE_T mem_read(void *buf, OPJ_SIZE_T n, void *ud)
{
    auto *m = static_cast<mem_stream *>(ud);
    if (m->pos >= m->size)
        return static_cast<OPJ_SIZE_T>(-1);
    size_t k = m->size - m->pos < n ? m->size - m->pos : n;
    memcpy(buf, m->data + m->pos, k);
    m->pos += k;
    return k;
}

OPJ_OFF_T mem_skip(OPJ_OFF_T n, void *ud)
{
    auto *m = static_cast<mem_stream *>(ud);
    if (n < 0) {
        if (static_cast<size_t>(-n) > m->pos)
            n = -static_cast<OPJ_OFF_T>(m->pos);
    } else if (static_cast<size_t>(n) > m->size - m->pos) {
        n = static_cast<OPJ_OFF_T>(m->size - m->pos);
    }
    m->pos = static_cast<size_t>(static_cast<OPJ_OFF_T>(m->pos) + n);
    return n;
}

OPJ_BOOL mem_seek(OPJ_OFF_T n, void *ud)
{
    auto *m = static_cast<mem_stream *>(ud);
    if (n < 0 || static_cast<size_t>(n) > m->size)
        return OPJ_FALSE;
    m->pos = static_cast<size_t>(n);
    return OPJ_TRUE;
}

void opj_error_cb(const char *msg, void *ud)
{
    auto *s = static_cast<std::string *>(ud);
    if (s->empty() && msg) {
        *s = msg;
        while (!s->empty() && (s->back() == '\n' || s->back() == '\r'))
            s->pop_back();
    }
}

void opj_quiet_cb(const char *, void *) {}

struct opj_guard {
    opj_codec_t *codec = nullptr;
    opj_stream_t *stream = nullptr;
    opj_image_t *image = nullptr;
    ~opj_guard()
    {
        if (image)
            opj_image_destroy(image);
        if (stream)
            opj_stream_destroy(stream);
        if (codec)
            opj_destroy_codec(codec);
    }
};

bool is_j2k_xfer(const DcmXfer &x)
{
    const char *uid = x.getXferID();
    return uid && (!strcmp(uid, UID_JPEG2000LosslessOnlyTransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000TransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax));
}

// Decodes one frame's codestream into OUT (rows*cols floats).
void decode_j2k_frame(const uint8_t *data, size_t size, const pixel_format &f,
                      const rescale &r, pixel_out &out, size_t base, long frame)
{
    static const uint8_t jp2_sig[12] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50,
                                        0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};
    // Some writers wrap the codestream in a JP2 file although DICOM asks for a bare one.
    bool jp2 = size >= sizeof jp2_sig && !memcmp(data, jp2_sig, sizeof jp2_sig);

    std::string opj_msg;
    opj_guard g;
    g.codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
    if (!g.codec)
        fail("cannot create a JPEG 2000 decoder");
    opj_set_error_handler(g.codec, opj_error_cb, &opj_msg);
    opj_set_warning_handler(g.codec, opj_quiet_cb, nullptr);
    opj_set_info_handler(g.codec, opj_quiet_cb, nullptr);
    opj_dparameters_t params;
    opj_set_default_decoder_parameters(&params);
    if (!opj_setup_decoder(g.codec, &params))
        fail("cannot set up the JPEG 2000 decoder");

    mem_stream ms{data, size, 0};
    g.stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
    if (!g.stream)
        fail("cannot create a JPEG 2000 stream");
    opj_stream_set_user_data(g.stream, &ms, nullptr);
    opj_stream_set_user_data_length(g.stream, size);
    opj_stream_set_read_function(g.stream, mem_read);
    opj_stream_set_skip_function(g.stream, mem_skip);
    opj_stream_set_seek_function(g.stream, mem_seek);

    std::string where = "JPEG 2000 frame " + std::to_string(frame + 1);
    if (!opj_read_header(g.stream, g.codec, &g.image) || !g.image)
        fail(where + ": bad header" + (opj_msg.empty() ? "" : ": " + opj_msg));
    // Checked before decoding: the header alone decides how much OpenJPEG allocates.
    if (g.image->numcomps != 1)
        fail("colour images are not supported (JPEG 2000 data with " +
             std::to_string(g.image->numcomps) + " components)");
    const opj_image_comp_t &h = g.image->comps[0];
    if (h.w != static_cast<OPJ_UINT32>(f.cols) || h.h != static_cast<OPJ_UINT32>(f.rows))
        fail(where + ": size " + std::to_string(h.w) + "x" + std::to_string(h.h) +
             " does not match Columns x Rows " + std::to_string(f.cols) + "x" +
             std::to_string(f.rows));
    if (h.prec < 1 || h.prec > 32)
        fail(where + ": unsupported precision " + std::to_string(h.prec));
    if (!opj_decode(g.codec, g.stream, g.image) || !opj_end_decompress(g.codec, g.stream))
        fail(where + ": cannot decode" + (opj_msg.empty() ? "" : ": " + opj_msg));
    const opj_image_comp_t &c = g.image->comps[0];
    if (g.image->numcomps != 1 || !c.data || c.w != h.w || c.h != h.h)
        fail(where + ": decoded image does not match its header");

    const size_t n = static_cast<size_t>(f.rows) * static_cast<size_t>(f.cols);
    const bool j2k_signed = c.sgnd != 0;
    const bool dicom_signed = f.pixel_rep == 1;
    const int prec = static_cast<int>(c.prec);
    for (size_t i = 0; i < n; i++) {
        int64_t v = c.data[i];
        if (j2k_signed != dicom_signed) {
            // Pixel Representation rules, as pydicom does: unsigned J2K samples
            // are reinterpreted as two's complement of their own precision;
            // signed ones go through the Bits Stored mask.
            if (!j2k_signed) {
                uint32_t w = static_cast<uint32_t>(v);
                if (prec < 32)
                    w &= (1u << prec) - 1u;
                v = (prec < 32 && ((w >> (prec - 1)) & 1u))
                        ? static_cast<int64_t>(w) - (static_cast<int64_t>(1) << prec)
                        : static_cast<int64_t>(w);
            } else {
                v = stored_value(static_cast<uint32_t>(v), f);
            }
        }
        out.put(base + i, static_cast<double>(v) * r.slope + r.intercept);
    }
}

struct fragment {
    const uint8_t *data;
    size_t size;
    uint64_t offset; // of its item tag, from the first fragment's item tag (BOT units)
};

// Groups the fragments of an encapsulated J2K pixel sequence into frames.
std::vector<std::vector<const fragment *>> j2k_frames(const std::vector<fragment> &frags,
                                                      const std::vector<uint32_t> &bot,
                                                      long frames)
{
    std::vector<std::vector<const fragment *>> out;
    const size_t nf = static_cast<size_t>(frames);
    if (frames == 1) {
        out.emplace_back();
        for (const fragment &fr : frags)
            out.back().push_back(&fr);
        return out;
    }
    if (bot.size() == nf) {
        out.resize(nf);
        for (const fragment &fr : frags) {
            size_t k = 0;
            while (k + 1 < nf && fr.offset >= bot[k + 1])
                k++;
            if (fr.offset < bot[k])
                fail("the Basic Offset Table does not match the fragments");
            out[k].push_back(&fr);
        }
        for (auto &v : out)
            if (v.empty())
                fail("the Basic Offset Table does not match the fragments");
        return out;
    }
    if (frags.size() == nf) {
        for (const fragment &fr : frags)
            out.push_back({&fr});
        return out;
    }
    // No usable offset table: a frame starts at each fragment that opens a
    // codestream (SOC marker and SIZ) or a JP2 signature box.
    for (const fragment &fr : frags) {
        bool starts = fr.size >= 4 && ((fr.data[0] == 0xFF && fr.data[1] == 0x4F &&
                                        fr.data[2] == 0xFF && fr.data[3] == 0x51) ||
                                       (fr.size >= 8 && fr.data[4] == 0x6A && fr.data[5] == 0x50 &&
                                        fr.data[6] == 0x20 && fr.data[7] == 0x20));
        if (starts || out.empty())
            out.emplace_back();
        out.back().push_back(&fr);
    }
    if (out.size() != nf)
        fail("cannot split the JPEG 2000 fragments into " + std::to_string(frames) + " frames");
    return out;
}

void decode_j2k(DcmPixelSequence *seq, const pixel_format &f, const std::vector<rescale> &rs,
                pixel_out &out)
{
    const unsigned long items = seq->card();
    if (items < 2)
        fail("JPEG 2000 pixel data has no fragments");

    std::vector<uint32_t> bot;
    std::vector<fragment> frags;
    uint64_t offset = 0;
    for (unsigned long i = 0; i < items; i++) {
        DcmPixelItem *item = nullptr;
        if (seq->getItem(item, i).bad() || !item)
            fail("cannot read a JPEG 2000 fragment");
        Uint8 *bytes = nullptr;
        const Uint32 len = item->getLength();
        if (len > 0 && (item->getUint8Array(bytes).bad() || !bytes))
            fail("cannot read a JPEG 2000 fragment");
        if (i == 0) {
            for (Uint32 k = 0; k + 4 <= len; k += 4)
                bot.push_back(static_cast<uint32_t>(bytes[k]) |
                              static_cast<uint32_t>(bytes[k + 1]) << 8 |
                              static_cast<uint32_t>(bytes[k + 2]) << 16 |
                              static_cast<uint32_t>(bytes[k + 3]) << 24);
            continue;
        }
        frags.push_back({bytes, len, offset});
        offset += 8u + len; // item tag and length precede each fragment
    }

    auto frames = j2k_frames(frags, bot, f.frames);
    const size_t per_frame = static_cast<size_t>(f.rows) * static_cast<size_t>(f.cols);
    std::vector<uint8_t> joined;
    for (size_t k = 0; k < frames.size(); k++) {
        const uint8_t *data;
        size_t size;
        if (frames[k].size() == 1) {
            data = frames[k][0]->data;
            size = frames[k][0]->size;
        } else {
            joined.clear();
            for (const fragment *fr : frames[k])
                joined.insert(joined.end(), fr->data, fr->data + fr->size);
            data = joined.data();
            size = joined.size();
        }
        if (!data || size == 0)
            fail("JPEG 2000 frame " + std::to_string(k + 1) + " is empty");
        check_j2k_size(data, size, f, static_cast<long>(k));
        decode_j2k_frame(data, size, f, rs[k], out, k * per_frame, static_cast<long>(k));
    }
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
