// deflate.cpp — reading a Deflated Explicit VR Little Endian file without
// inflating it in memory.
//
// DCMTK's own reading of a deflated file inflates the whole data set in
// memory (its values cannot be left on disk when the stream cannot seek): a
// 1.5 MB file of zeros becomes 1.5 GB. The receiver and the job's source
// set both read such files through an inflated copy on disk instead,
// counted against a byte budget.

#include "dicom/internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcerror.h"

#include <zlib.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace ainode_dicom {

namespace {

const OFConditionConst ECC_InflatedTooLarge = {OFM_dcmdata, 0x7f01, OF_error,
                                               "inflated data set larger than the limit"};
const OFConditionConst ECC_BadDeflate = {OFM_dcmdata, 0x7f02, OF_error,
                                         "deflated data set cannot be inflated"};

// The offset of the data set in the Part 10 file FD: after the 128-byte
// preamble, "DICM" and the File Meta Information (group 0002, explicit VR
// little endian). -1 when the file does not look like that.
off_t data_set_offset(int fd)
{
    unsigned char buf[65536];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    if (n < 132 || std::memcmp(buf + 128, "DICM", 4) != 0)
        return -1;
    size_t off = 132;
    while (off + 8 <= (size_t)n) {
        unsigned group = buf[off] | buf[off + 1] << 8;
        if (group != 0x0002)
            return (off_t)off;
        const char vr[3] = {(char)buf[off + 4], (char)buf[off + 5], 0};
        static const char *const long_vrs[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ",
                                               "SV", "UC", "UN", "UR", "UT", "UV"};
        bool long_form = false;
        for (const char *l : long_vrs)
            long_form = long_form || std::strcmp(l, vr) == 0;
        if (long_form) {
            if (off + 12 > (size_t)n)
                return -1;
            size_t len = (size_t)buf[off + 8] | (size_t)buf[off + 9] << 8 |
                         (size_t)buf[off + 10] << 16 | (size_t)buf[off + 11] << 24;
            off += 12 + len;
        } else {
            off += 8 + ((size_t)buf[off + 6] | (size_t)buf[off + 7] << 8);
        }
    }
    return -1; // a meta header of 64 KB or more is no meta header
}

} // namespace

const OFCondition EC_InflatedTooLarge(ECC_InflatedTooLarge);
const OFCondition EC_BadDeflate(ECC_BadDeflate);

// Inflates the deflated data set of PATH (raw deflate, PS3.5 A.5) into an
// unnamed temporary file next to it, counting: more than LIMIT bytes (0:
// no limit) stops it with EC_InflatedTooLarge. DCMTK's own reading of a
// deflated file inflates the whole data set in memory (its values cannot
// be left on disk when the stream cannot seek): a 1.5 MB file of zeros
// becomes 1.5 GB. Here memory stays at the buffers below, disk at LIMIT.
// On success OUT owns the descriptor of the plain copy, positioned nowhere
// in particular (read it through /proc/self/fd).
OFCondition inflate_to_temp(const char *path, uint64_t limit, FdGuard &out)
{
    FdGuard in;
    in.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (in.fd < 0)
        return EC_InvalidFilename;
    off_t start = data_set_offset(in.fd);
    if (start < 0)
        return EC_FileMetaInfoHeaderMissing;
    std::string dir(path);
    size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
    out.fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (out.fd < 0) {
        // No O_TMPFILE on this file system: a named file, unlinked at once.
        std::string tmpl = dir + "/.inflate-XXXXXX";
        std::vector<char> name(tmpl.begin(), tmpl.end());
        name.push_back('\0');
        out.fd = mkostemp(name.data(), O_CLOEXEC);
        if (out.fd < 0)
            return makeOFCondition(OFM_dcmdata, 0x7f03, OF_error, std::strerror(errno));
        unlink(name.data());
    }
    z_stream z;
    std::memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
        return EC_MemoryExhausted;
    std::vector<unsigned char> ibuf(64 << 10), obuf(256 << 10);
    uint64_t total = 0;
    off_t pos = start;
    int zrc = Z_OK;
    OFCondition cond = EC_Normal;
    while (zrc != Z_STREAM_END && cond.good()) {
        if (z.avail_in == 0) {
            ssize_t got = pread(in.fd, ibuf.data(), ibuf.size(), pos);
            if (got <= 0) {
                cond = EC_BadDeflate; // the stream ends before its end
                break;
            }
            pos += got;
            z.next_in = ibuf.data();
            z.avail_in = (uInt)got;
        }
        z.next_out = obuf.data();
        z.avail_out = (uInt)obuf.size();
        zrc = inflate(&z, Z_NO_FLUSH);
        if (zrc != Z_OK && zrc != Z_STREAM_END) {
            cond = EC_BadDeflate;
            break;
        }
        size_t have = obuf.size() - z.avail_out;
        total += have;
        if (limit && total > limit) {
            cond = EC_InflatedTooLarge;
            break;
        }
        for (size_t done = 0; done < have;) {
            ssize_t w = ::write(out.fd, obuf.data() + done, have - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                cond = makeOFCondition(OFM_dcmdata, 0x7f03, OF_error, std::strerror(errno));
                break;
            }
            done += (size_t)w;
        }
    }
    inflateEnd(&z);
    return cond;
}


} // namespace ainode_dicom
