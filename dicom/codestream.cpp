// codestream.cpp — compressed pixel data before and in its codec: each
// JPEG, JPEG-LS and JPEG 2000 frame's own header read, bounds-checked and
// compared with the DICOM header before a codec allocates what it claims;
// JPEG 2000 decoded through OpenJPEG (Debian's DCMTK has no J2K codec).

#include "dicom/pixel_internal.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <openjpeg.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace ainode_dicom {

namespace {

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

} // namespace

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

bool is_j2k_xfer(const DcmXfer &x)
{
    const char *uid = x.getXferID();
    return uid && (!strcmp(uid, UID_JPEG2000LosslessOnlyTransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000TransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax) ||
                   !strcmp(uid, UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax));
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

} // namespace ainode_dicom
