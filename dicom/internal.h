// internal.h — inside dicom/ only: the one helper that hands a reason to C
// callers, the frame geometry reader, and the source set's insides.
#ifndef AINODE_DICOM_INTERNAL_H
#define AINODE_DICOM_INTERNAL_H

#include "dicom/image.h"
#include "dicom/network.h"
#include "dicom/results.h"

extern "C" {
#include "common/error.h"
#include "common/labels.h"
}

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmlayer.h>
#include <dcmtk/ofstd/ofstring.h>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ainode_dicom {

// Copies MSG into the caller's ERR buffer as one line (common/error.h:
// DCMTK condition texts and codec messages may carry newlines); returns CODE.
inline int copy_err(char *err, size_t errlen, const std::string &msg, int code = DICOM_EINVAL)
{
    return error_set(err, errlen, code, "%s", msg.c_str());
}

// The geometry of one frame, as the one reader below finds it. The text
// forms are the source's own values (the SEG copies them unchanged), or
// formatted from the computed value where a position is derived from the
// Grid Frame Offset Vector.
struct frame_geometry {
    double ipp[3] = {0, 0, 0};
    double iop[6] = {0, 0, 0, 0, 0, 0};
    double spacing[2] = {0, 0};     // between rows, between columns
    double thickness = 0;           // 0: none given
    OFString ipp_text[3], iop_text[6], spacing_text, thickness_text;
    bool has_ipp = false, has_iop = false, has_spacing = false;
    bool complete() const { return has_ipp && has_iop && has_spacing; }
};

// Reads the geometry of each of FRAMES frames of DS: per frame from the
// Per-frame Functional Groups, else the Shared ones, else the top level;
// frames of a classic multi-frame image (no plane position per frame) are
// placed along the normal by the Grid Frame Offset Vector.
std::vector<frame_geometry> read_geometry(DcmItem *ds, long frames);

// Registers DCMTK's JPEG, JPEG-LS and RLE decoders, once per process.
void register_decoders();

// One file of a source set.
struct FdGuard;

struct source_file {
    // A deflated file's inflated copy (deflate.cpp), which HEADER reads its
    // large values from: declared first, so that it goes last.
    std::shared_ptr<FdGuard> inflated;
    std::string path;
    std::unique_ptr<DcmDataset> header;  // the data set without its pixel data
    dicom_image *image = nullptr;
    std::vector<frame_geometry> geom;    // per frame
    OFString sop_class, sop_instance, study, series, frame_of_ref, patient_id;
    bool multiframe = false;             // has Number of Frames: frames referenced by number
    bool decoded = false;                // pixels decoded (and the encoded ones dropped)
};

// How many voxels of each label each slice of R holds (nz x 256,
// common/labels.h): the caller's counts, or counted here once.
inline std::vector<int64_t> label_counts(const dicom_result *r)
{
    const size_t nz = static_cast<size_t>(r->nz);
    if (r->label_counts)
        return std::vector<int64_t>(r->label_counts, r->label_counts + nz * LABELS_PER_PLANE);
    std::vector<int64_t> counts(nz * LABELS_PER_PLANE);
    labels_count(r->labels, static_cast<size_t>(r->nx) * static_cast<size_t>(r->ny), nz,
                 counts.data());
    return counts;
}

// Whether an image reference to F names its frame (SR and SEG alike): only
// for a multi-frame image whose SOP class has frames. The classic single-frame classes
// (dciodvfy refuses a Referenced Frame Number for them) are referenced
// whole, even when an object of theirs carries Number of Frames.
inline bool references_frames(const source_file &f)
{
    static const char *const single_frame[] = {
        "1.2.840.10008.5.1.4.1.1.1",     // CR
        "1.2.840.10008.5.1.4.1.1.1.1",   // DX for presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1", // DX for processing
        "1.2.840.10008.5.1.4.1.1.1.2",   // MG for presentation
        "1.2.840.10008.5.1.4.1.1.1.2.1", // MG for processing
        "1.2.840.10008.5.1.4.1.1.1.3",   // IO for presentation
        "1.2.840.10008.5.1.4.1.1.1.3.1", // IO for processing
        "1.2.840.10008.5.1.4.1.1.2",     // CT
        "1.2.840.10008.5.1.4.1.1.4",     // MR
        "1.2.840.10008.5.1.4.1.1.6.1",   // US
        "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture
        "1.2.840.10008.5.1.4.1.1.128",   // PET
    };
    if (!f.multiframe)
        return false;
    for (const char *uid : single_frame)
        if (f.sop_class == uid)
            return false;
    return true;
}

// ---- Deflated files (deflate.cpp) ----

// A descriptor closed when the guard goes.
struct FdGuard {
    int fd = -1;
    FdGuard() = default;
    FdGuard(const FdGuard &) = delete;
    FdGuard &operator=(const FdGuard &) = delete;
    ~FdGuard()
    {
        if (fd >= 0)
            close(fd);
    }
};

extern const OFCondition EC_InflatedTooLarge; // over the byte budget
extern const OFCondition EC_BadDeflate;       // not a complete deflate stream

// Inflates the deflated data set of the Part 10 file PATH into an unnamed
// temporary file next to it, counting: more than LIMIT bytes (0: no limit)
// stops it with EC_InflatedTooLarge. OUT then owns the plain copy (explicit
// VR little endian, no meta header); read it through /proc/self/fd/N.
OFCondition inflate_to_temp(const char *path, uint64_t limit, FdGuard &out);

// ---- TLS (tls.cpp) ----

// A dcmtls transport layer for ROLE (NET_ACCEPTOR or NET_REQUESTOR) set up
// from CFG: BCP 195 non-downgrading profile, certificate, key, CA bundle,
// peer verification. With HANDOVER (acceptors only) it releases the
// socket hand-over as soon as dcmnet has taken the socket, before the
// handshake (see tls_handover_begin). Null with ERR set on failure; ERR
// names files and OpenSSL's reason, never key material.
// The transport of the plain listener (quickack.cpp): TCP connections that
// acknowledge each read at once, so that senders with Nagle's algorithm on
// do not stall on the receiver's delayed ACK.
std::unique_ptr<DcmTransportLayer> quickack_make_layer();

std::unique_ptr<DcmTransportLayer> tls_make_layer(T_ASC_NetworkRole role,
                                                  const dicom_tls_config &cfg, bool handover,
                                                  std::string &err);

// The hand-over of an accepted socket to dcmnet goes through the one
// process-wide dcmExternalSocketHandle under LOCK (held by the caller).
// Between tls_handover_begin and tls_handover_end on one thread, the layer
// made with HANDOVER resets dcmExternalSocketHandle and unlocks LOCK the
// moment dcmnet takes the socket, so that a slow TLS handshake never holds
// the hand-over. It also bounds each read and write of the handshake to
// HANDSHAKE_SECONDS (dcmnet sets its own 60 s on every new connection).
// tls_handover_end returns true when dcmnet took the socket (it then owns
// it, whatever the outcome).
void tls_handover_begin(std::unique_lock<std::mutex> *lock, int handshake_seconds);
bool tls_handover_end();

// What the last handshake completed on this thread agreed: protocol,
// cipher suite and the subject of the peer's certificate (or "no peer
// certificate"); empty when none completed. Clears it.
std::string tls_take_session();
// The subject of the certificate the peer of ASSOC presented over TLS
// (OpenSSL's one-line form) and its CN; false when it showed none.
bool tls_peer_subject(T_ASC_Association *assoc, std::string &subject, std::string &cn);

// Why the last handshake on this thread failed, for COND (the condition
// dcmnet returned): OpenSSL's reason plus, when our side refused the
// peer's certificate, the verification error (e.g. "certificate has
// expired"). Clears the recorded verification error.
std::string tls_failure_text(const OFCondition &cond);
// Whether COND (from a handshake on this thread, asked before
// tls_failure_text) is a refused certificate: a matter of configuration,
// not of the network.
enum tls_refusal { TLS_NOT_REFUSED, TLS_PEER_CERT_REFUSED, TLS_OUR_CERT_REFUSED };
tls_refusal tls_certificate_refusal(const OFCondition &cond);

} // namespace ainode_dicom

struct dicom_sources {
    std::vector<ainode_dicom::source_file> files;
};

#endif
