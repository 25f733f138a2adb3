// receive.cpp — one C-STORE received: its data set streamed into a
// temporary file as it arrived, its indexed attributes read back, the
// node's verdict (the `stored` callback) sent as the response.
//
// The file is written with plain write(2) and its writeback started while
// the data still arrives; it is parsed only up to its small values (the
// pixel data stays on disk); a deflated one is inflated with a byte budget.
// dicom_read_values() reads a stored file again the same way.

#include "dicom/internal.h"
#include "dicom/server_internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcostrma.h"
#include "dcmtk/dcmdata/dcostrmf.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace ainode_dicom {

namespace {

// A stored deflated file read again (the repair after an unclean stop) was
// within the limit when it arrived; this only keeps a damaged one from
// filling the disk with its inflated copy.
const uint64_t kRereadInflateLimit = (uint64_t)64 << 30;

void send_store_response(Association &a, T_ASC_PresentationContextID pres_id,
                         T_DIMSE_C_StoreRQ &req, Uint16 status, const char *comment)
{
    // Every C-STORE answered passes here: the audit trail's counts.
    if (dicom_store_status_ok(status))
        a.stored++;
    else
        a.refused++;
    T_DIMSE_C_StoreRSP rsp;
    std::memset(&rsp, 0, sizeof rsp);
    rsp.MessageIDBeingRespondedTo = req.MessageID;
    rsp.DimseStatus = status;
    rsp.DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(rsp.AffectedSOPClassUID, req.AffectedSOPClassUID,
                        sizeof rsp.AffectedSOPClassUID);
    OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID,
                        sizeof rsp.AffectedSOPInstanceUID);
    rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
    DcmDataset detail;
    DcmDataset *detail_ptr = nullptr;
    if (status != STATUS_Success && comment && *comment) {
        // Error Comment is LO: at most 64 characters.
        std::string c(comment);
        if (c.size() > 64)
            c.resize(64);
        detail.putAndInsertString(DCM_ErrorComment, c.c_str());
        detail_ptr = &detail;
    }
    OFCondition cond = DIMSE_sendStoreResponse(a.assoc, pres_id, &req, &rsp, detail_ptr);
    if (cond.bad())
        a.srv->logp(1, "association.response_failed", a.calling, a.address,
                    "cannot send C-STORE response to %s: %s", a.calling.c_str(), cond.text());
}

// Reads the wanted attributes of a just-received file (File Meta
// Information keywords from the meta header). Values larger than a few KB
// are never loaded: the pixel data stays on disk.
// A descriptor closed when it goes out of scope.
// A file parsed by read_values(). For a deflated one, TMP holds the
// inflated copy the data set's large values still refer to: declared
// before FF, it is closed only after FF is gone.
struct ParsedFile {
    FdGuard tmp;
    DcmFileFormat ff;
};

OFCondition read_values(const char *path, const std::vector<DcmTagKey> &tags,
                        std::vector<std::string> &values, std::vector<bool> &present,
                        std::string &ts_out, ParsedFile &pf, uint64_t inflate_limit)
{
    DcmFileFormat &ff = pf.ff;
    OFCondition cond = ff.loadFile(path, EXS_Unknown, EGL_noChange, 4096, ERM_metaOnly);
    if (cond.bad())
        return cond;
    OFString meta_ts;
    ff.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, meta_ts);
    if (meta_ts == UID_DeflatedExplicitVRLittleEndianTransferSyntax) {
        // The data set is read from an inflated copy, never inflated in
        // memory by DCMTK (see inflate_to_temp).
        cond = inflate_to_temp(path, inflate_limit, pf.tmp);
        if (cond.bad())
            return cond;
        char plain[64];
        std::snprintf(plain, sizeof plain, "/proc/self/fd/%d", pf.tmp.fd);
        cond = ff.getDataset()->loadFile(plain, EXS_LittleEndianExplicit, EGL_noChange, 4096);
    } else {
        cond = ff.loadFile(path, EXS_Unknown, EGL_noChange, 4096, ERM_fileOnly);
    }
    if (cond.bad())
        return cond;
    DcmDataset *ds = ff.getDataset();
    DcmMetaInfo *meta = ff.getMetaInfo();
    values.assign(tags.size(), std::string());
    present.assign(tags.size(), false);
    for (size_t i = 0; i < tags.size(); i++) {
        OFString v;
        DcmItem *where = tags[i].getGroup() == 0x0002 ? static_cast<DcmItem *>(meta) : ds;
        if (where->findAndGetOFStringArray(tags[i], v).good()) {
            values[i] = trim(v.c_str());
            present[i] = true;
        }
    }
    if (meta_ts == UID_DeflatedExplicitVRLittleEndianTransferSyntax) {
        ts_out = meta_ts.c_str(); // the file's, not its inflated copy's
    } else {
        DcmXfer xfer(ds->getOriginalXfer());
        ts_out = xfer.getXferID();
    }
    return EC_Normal;
}

// Where a received data set goes: appended to the temporary file with
// plain write(2). A failed write (disk full, I/O error) is remembered, not
// reported to dcmnet: the rest of the data set is still read off the
// network and dropped, so the sender gets an answer (out of resources)
// instead of an aborted association. Writeback to disk is started while
// the data still arrives, so that the fsync before the answer has little
// left to wait for.
//
// A data set larger than max_dataset_mb, or one still arriving when the
// association's time is up, is not drained: that could go on for ever.
// The consumer stops, and shuts the socket's reading side, so that the
// drain dcmnet starts on a failed write ends at once; the caller then
// aborts the association.
class SpoolConsumer : public DcmConsumer {
public:
    SpoolConsumer(int fd, const Association &a) : fd_(fd), a_(a) {}
    OFBool good() const override { return !stop_; }
    OFCondition status() const override { return stop_ ? EC_StreamNotifyClient : EC_Normal; }
    OFBool isFlushed() const override { return OFTrue; }
    offile_off_t avail() const override { return 1 << 30; }
    void flush() override {}
    int error() const { return error_; }
    bool too_large() const { return stop_ == STOP_TOO_LARGE; }
    bool expired() const { return stop_ == STOP_EXPIRED; }

    offile_off_t write(const void *buf, offile_off_t len) override
    {
        if (stop_)
            return 0;
        received_ += (uint64_t)len;
        const uint64_t limit = a_.srv->max_dataset_bytes;
        if ((limit && received_ > limit) || a_.expired()) {
            stop_ = limit && received_ > limit ? STOP_TOO_LARGE : STOP_EXPIRED;
            shutdown(a_.fd, SHUT_RD);
            return 0;
        }
        const char *p = static_cast<const char *>(buf);
        offile_off_t left = len;
        while (left > 0 && !error_) {
            ssize_t n = ::write(fd_, p, (size_t)left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                error_ = errno;
                break;
            }
            p += n;
            left -= n;
            written_ += n;
        }
        if (!error_ && written_ - flushed_ >= kWritebackChunk) {
            sync_file_range(fd_, flushed_, written_ - flushed_, SYNC_FILE_RANGE_WRITE);
            flushed_ = written_;
        }
        return len;
    }

private:
    enum { STOP_NOT = 0, STOP_TOO_LARGE, STOP_EXPIRED };
    static const off_t kWritebackChunk = 256 << 10;
    int fd_;
    const Association &a_;
    int error_ = 0;
    int stop_ = STOP_NOT;
    uint64_t received_ = 0;
    off_t written_ = 0, flushed_ = 0;
};

class SpoolStream : public DcmOutputStream {
public:
    SpoolStream(int fd, const Association &a) : DcmOutputStream(&consumer_), consumer_(fd, a) {}
    int error() const { return consumer_.error(); }
    bool too_large() const { return consumer_.too_large(); }
    bool expired() const { return consumer_.expired(); }

private:
    SpoolConsumer consumer_;
};

// Reads a data set that will not be stored off the network and answers
// STATUS (out of resources unless told otherwise).
void drop_data_set(Association &a, T_ASC_PresentationContextID pres_id, T_DIMSE_C_StoreRQ &req,
                   bool &fatal, Uint16 status = DICOM_STATUS_OUT_OF_RESOURCES,
                   const char *comment = "cannot create file")
{
    DIC_UL bytes = 0, pdvs = 0;
    if (DIMSE_ignoreDataSet(a.assoc, DIMSE_NONBLOCKING, a.srv->timeout, &bytes, &pdvs).bad()) {
        fatal = true;
        return;
    }
    send_store_response(a, pres_id, req, status, comment);
}

} // namespace

void handle_store(Association &a, T_ASC_PresentationContextID pres_id, T_DIMSE_C_StoreRQ &req,
                  bool &fatal)
{
    dicom_server *srv = a.srv;
    T_ASC_PresentationContext pc;
    if (ASC_findAcceptedPresentationContext(a.assoc->params, pres_id, &pc).bad()) {
        fatal = true;
        return;
    }
    if (srv->store_begin) {
        // Refused before a byte of it is written (e.g. too little disk).
        char why[128] = "";
        dicom_peer p = a.peer();
        uint16_t status = srv->store_begin(srv->ud, &p, why, sizeof why);
        if (status != DICOM_STATUS_SUCCESS) {
            drop_data_set(a, pres_id, req, fatal, status, why);
            return;
        }
    }
    char temp[4096];
    if (srv->temp_path(srv->ud, temp, sizeof temp) != 0) {
        srv->log(0, "no temporary file name for a received instance");
        drop_data_set(a, pres_id, req, fatal);
        return;
    }

    // dcmnet writes the File Meta Information; the data set is appended.
    DcmOutputFileStream *meta = nullptr;
    OFCondition cond = DIMSE_createFilestream(temp, &req, a.assoc, pres_id, OFTrue, &meta);
    bool meta_ok = cond.good() && meta->good();
    delete meta; // closes the file
    int fd = meta_ok ? open(temp, O_WRONLY | O_APPEND | O_CLOEXEC) : -1;
    if (fd < 0) {
        srv->log(0, "cannot create %s: %s", temp, cond.bad() ? cond.text() : std::strerror(errno));
        std::remove(temp);
        drop_data_set(a, pres_id, req, fatal);
        return;
    }
    T_ASC_PresentationContextID data_pres_id = pres_id;
    SpoolStream out(fd, a);
    cond = DIMSE_receiveDataSetInFile(a.assoc, DIMSE_NONBLOCKING, srv->timeout, &data_pres_id,
                                      &out, nullptr, nullptr);
    int write_error = out.error();
    if (close(fd) != 0 && !write_error)
        write_error = errno;
    if (out.too_large() || out.expired()) {
        if (out.too_large())
            srv->logp(1, "association.aborted", a.calling, a.address,
                      "aborting association from %s: a data set larger than "
                      "node.max_dataset_mb (%llu MB)",
                      a.calling.c_str(), (unsigned long long)(srv->max_dataset_bytes >> 20));
        else
            srv->logp(1, "association.aborted", a.calling, a.address,
                      "aborting association from %s: open for %d s "
                      "(node.max_association_seconds)",
                      a.calling.c_str(), srv->max_seconds);
        a.outcome = out.too_large() ? "aborted: data set too large" : "aborted: time limit";
        std::remove(temp);
        fatal = true;
        return;
    }
    if (cond.bad()) {
        // The association is broken mid data set: nothing was acknowledged.
        srv->logp(1, "instance.receive_failed", a.calling, a.address,
                  "receiving data set from %s failed: %s", a.calling.c_str(), cond.text());
        a.outcome = cond == DUL_PEERABORTEDASSOCIATION ? "aborted by peer" : "network error";
        std::remove(temp);
        fatal = true;
        return;
    }
    if (write_error) {
        srv->log(0, "cannot write a received instance: %s", std::strerror(write_error));
        std::remove(temp);
        send_store_response(a, pres_id, req, DICOM_STATUS_OUT_OF_RESOURCES,
                            "cannot write file (disk full?)");
        return;
    }
    if (data_pres_id != pres_id) {
        std::remove(temp);
        send_store_response(a, pres_id, req, DICOM_STATUS_CANNOT_UNDERSTAND,
                            "data set on another presentation context");
        return;
    }

    std::vector<std::string> values;
    std::vector<bool> present;
    std::string ts;
    ParsedFile pf;
    cond = read_values(temp, srv->tags, values, present, ts, pf, srv->max_dataset_bytes);
    if (cond == EC_InflatedTooLarge) {
        // A deflate bomb or just a huge data set: the limit holds for the
        // data set as it is, inflated, not only as it travelled.
        srv->logp(1, "instance.refused", a.calling, a.address,
                  "refusing a deflated data set from %s: larger than node.max_dataset_mb "
                  "(%llu MB) once inflated",
                 a.calling.c_str(), (unsigned long long)(srv->max_dataset_bytes >> 20));
        std::remove(temp);
        send_store_response(a, pres_id, req, DICOM_STATUS_OUT_OF_RESOURCES,
                            "inflated data set exceeds the size limit");
        return;
    }
    if (cond.bad()) {
        srv->logp(1, "instance.refused", a.calling, a.address, "unparseable data set from %s: %s",
                  a.calling.c_str(), cond.text());
        std::remove(temp);
        send_store_response(a, pres_id, req, DICOM_STATUS_CANNOT_UNDERSTAND,
                            cond == EC_BadDeflate ? "deflated data set cannot be inflated"
                                                  : "data set cannot be parsed");
        return;
    }
    // The data set must be the instance the command announced.
    OFString ds_class, ds_inst;
    DcmDataset *ds = pf.ff.getDataset();
    ds->findAndGetOFString(DCM_SOPClassUID, ds_class);
    ds->findAndGetOFString(DCM_SOPInstanceUID, ds_inst);
    if (ds_class != req.AffectedSOPClassUID) {
        std::remove(temp);
        send_store_response(a, pres_id, req, DICOM_STATUS_DATASET_MISMATCH,
                            "SOP Class UID differs from the request");
        return;
    }
    if (ds_inst != req.AffectedSOPInstanceUID) {
        std::remove(temp);
        send_store_response(a, pres_id, req, DICOM_STATUS_CANNOT_UNDERSTAND,
                            "SOP Instance UID differs from the request");
        return;
    }

    std::vector<const char *> cvals(values.size());
    for (size_t i = 0; i < values.size(); i++)
        cvals[i] = present[i] ? values[i].c_str() : nullptr;
    dicom_peer peer = a.peer();
    dicom_received r = {temp, req.AffectedSOPClassUID, req.AffectedSOPInstanceUID,
                        pc.acceptedTransferSyntax, cvals.data(), &peer};
    char err[256] = "";
    uint16_t status = srv->stored(srv->ud, &r, err, sizeof err);
    send_store_response(a, pres_id, req, status, err);
}

} // namespace ainode_dicom

using ainode_dicom::copy_err;
using ainode_dicom::kRereadInflateLimit;
using ainode_dicom::ParsedFile;
using ainode_dicom::read_values;

int dicom_read_values(const char *path, const char *const *keywords, size_t n, char **values,
                      char **transfer_syntax, char *err, size_t errlen)
{
    std::vector<DcmTagKey> tags;
    for (size_t i = 0; i < n; i++) {
        values[i] = nullptr;
        DcmTag tag;
        if (DcmTag::findTagFromName(keywords[i], tag).bad()) {
            return copy_err(err, errlen, std::string("unknown DICOM keyword ") + keywords[i],
                            DICOM_EINVAL);
        }
        tags.push_back(tag);
    }
    std::vector<std::string> v;
    std::vector<bool> present;
    std::string ts;
    ParsedFile pf;
    OFCondition cond = read_values(path, tags, v, present, ts, pf, kRereadInflateLimit);
    if (cond.bad()) {
        return copy_err(err, errlen, std::string(path) + ": " + cond.text(),
                        cond == EC_InvalidStream || cond == EC_FileMetaInfoHeaderMissing ||
                                cond == EC_StreamNotifyClient || cond == EC_CorruptedData
                            ? DICOM_EFORMAT
                            : DICOM_EIO);
    }
    for (size_t i = 0; i < n; i++)
        if (present[i])
            values[i] = strdup(v[i].c_str());
    if (transfer_syntax)
        *transfer_syntax = strdup(ts.c_str());
    return 0;
}
