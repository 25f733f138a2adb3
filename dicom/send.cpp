// send.cpp — C-STORE SCU over dcmnet's association layer, behind network.h.
//
// One association per call: the results of one study go together. Every
// file is proposed in its own SOP class and transfer syntax (a SEG is not
// among DCMTK's default presentation contexts, and nothing is transcoded;
// the file's data set goes on the wire as stored). What happens is
// classified for the caller: sent, transient (worth trying again later) or
// permanent (the same request will be refused again).
//
// Over TLS (a destination with a tls section), a certificate refused by
// either side is permanent: it needs a change of configuration (a CA
// bundle, a renewed certificate), after which `ainode retry` sends the
// dead-lettered items again. Other handshake failures are transient.
// Under TLS 1.3 a peer refuses our certificate only after our side of the
// handshake is done; its alert is then usually read with the association
// request's answer, but a connection reset can overtake it, and that
// attempt counts as transient.

#include "dicom/internal.h"
#include "dicom/network.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/diutil.h"

#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>

namespace {

using ainode_dicom::copy_err;

void set_file(dicom_send_file *f, dicom_send_outcome o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void set_file(dicom_send_file *f, dicom_send_outcome o, const char *fmt, ...)
{
    f->outcome = o;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(f->error, sizeof f->error, fmt, ap);
    va_end(ap);
}

// Every file gets the association's fate.
int fail_all(dicom_send_file *files, size_t n, dicom_send_outcome o, int code,
             const std::string &why, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        set_file(&files[i], o, "%s", why.c_str());
    return copy_err(err, errlen, why, code);
}

struct net_guard {
    T_ASC_Network *net = nullptr;
    T_ASC_Association *assoc = nullptr;
    T_ASC_Parameters *params = nullptr; // until an association owns them
    ~net_guard()
    {
        if (assoc) {
            ASC_dropAssociation(assoc);
            ASC_destroyAssociation(&assoc);
        } else if (params) {
            ASC_destroyAssociationParameters(&params);
        }
        if (net)
            ASC_dropNetwork(&net);
    }
};

} // namespace

extern "C" {

int dicom_store_status_ok(uint16_t status)
{
    // Success, and every warning (PS3.7 C.1: 0001 or Bxxx; PS3.4 B.2.3
    // names B000, B006 and B007 for C-STORE, peers use others): the peer
    // kept the instance. Sending it again would only make a duplicate.
    return status == 0x0000 || status == 0x0001 || (status & 0xF000) == 0xB000;
}

enum dicom_send_outcome dicom_store_status_outcome(uint16_t status)
{
    if (dicom_store_status_ok(status))
        return DICOM_SEND_SENT;
    // Refused: out of resources (0xA7xx) passes; a data set that does not
    // match the SOP class (0xA9xx), one the peer cannot understand (0xCxxx)
    // and any other refusal would be refused again.
    if ((status & 0xFF00) == 0xA700)
        return DICOM_SEND_TRANSIENT;
    return DICOM_SEND_PERMANENT;
}

int dicom_send(const struct dicom_send_peer *peer, struct dicom_send_file *files, size_t n,
               char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        files[i].outcome = DICOM_SEND_TRANSIENT;
        files[i].answered = 0;
        files[i].status = 0;
        files[i].error[0] = '\0';
    }
    const std::string where = std::string(peer->called_ae) + " at " + peer->host + ":" +
                              std::to_string(peer->port);
    const int timeout = peer->timeout_seconds > 0 ? peer->timeout_seconds : 30;
    try {
        // Declared first: the network only points to it, so it goes last.
        std::unique_ptr<DcmTransportLayer> tls_layer;
        net_guard g;
        // The connect timeout is process-wide in dcmnet; every send uses
        // the node's one network timeout.
        dcmConnectionTimeout.set(timeout);
        OFCondition cond = ASC_initializeNetwork(NET_REQUESTOR, 0, timeout, &g.net);
        if (cond.good())
            cond = ASC_createAssociationParameters(&g.params, ASC_MAXIMUMPDUSIZE);
        if (cond.bad())
            return fail_all(files, n, DICOM_SEND_TRANSIENT, DICOM_ENETWORK,
                            std::string("cannot set up the network: ") + cond.text(), err,
                            errlen);
        if (peer->tls) {
            std::string e;
            tls_layer = ainode_dicom::tls_make_layer(NET_REQUESTOR, *peer->tls, false, e);
            if (!tls_layer)
                return fail_all(files, n, DICOM_SEND_PERMANENT, DICOM_EINVAL,
                                "TLS towards " + where + ": " + e, err, errlen);
            cond = ASC_setTransportLayer(g.net, tls_layer.get(), 0);
            if (cond.good())
                cond = ASC_setTransportLayerType(g.params, OFTrue);
            if (cond.bad())
                return fail_all(files, n, DICOM_SEND_TRANSIENT, DICOM_ENETWORK,
                                std::string("cannot set up TLS: ") + cond.text(), err, errlen);
        }
        ASC_setAPTitles(g.params, peer->calling_ae, peer->called_ae, nullptr);
        const std::string address = std::string(peer->host) + ":" + std::to_string(peer->port);
        ASC_setPresentationAddresses(g.params, "localhost", address.c_str());

        // One presentation context per (SOP class, transfer syntax) pair.
        std::map<std::pair<std::string, std::string>, T_ASC_PresentationContextID> contexts;
        T_ASC_PresentationContextID next_id = 1;
        for (size_t i = 0; i < n; i++) {
            auto key = std::make_pair(std::string(files[i].sop_class_uid),
                                      std::string(files[i].transfer_syntax));
            if (contexts.count(key))
                continue;
            if (next_id > 253)
                return fail_all(files, n, DICOM_SEND_PERMANENT, DICOM_EINVAL,
                                "more than 127 kinds of file in one association", err, errlen);
            const char *ts[] = {files[i].transfer_syntax};
            cond = ASC_addPresentationContext(g.params, next_id, files[i].sop_class_uid, ts, 1);
            if (cond.bad())
                return fail_all(files, n, DICOM_SEND_PERMANENT, DICOM_EINVAL,
                                std::string("cannot propose ") + files[i].sop_class_uid + ": " +
                                    cond.text(),
                                err, errlen);
            contexts[key] = next_id;
            next_id = static_cast<T_ASC_PresentationContextID>(next_id + 2);
        }

        T_ASC_Parameters *params = g.params;
        cond = ASC_requestAssociation(g.net, params, &g.assoc, nullptr, nullptr, DUL_NOBLOCK,
                                      timeout);
        if (g.assoc)
            g.params = nullptr; // the association owns them now
        if (cond == DUL_ASSOCIATIONREJECTED) {
            T_ASC_RejectParameters rej;
            ASC_getRejectParameters(params, &rej);
            OFString text;
            ASC_printRejectParameters(text, &rej);
            for (char &c : text)
                if (c == '\n')
                    c = ' ';
            const bool permanent = rej.result == ASC_RESULT_REJECTEDPERMANENT;
            return fail_all(files, n, permanent ? DICOM_SEND_PERMANENT : DICOM_SEND_TRANSIENT,
                            DICOM_EREFUSED,
                            std::string("association rejected ") +
                                (permanent ? "permanently" : "transiently") + " by " + where +
                                ": " + text.c_str(),
                            err, errlen);
        }
        if (cond.bad() && peer->tls) {
            const ainode_dicom::tls_refusal refusal = ainode_dicom::tls_certificate_refusal(cond);
            const std::string why = ainode_dicom::tls_failure_text(cond);
            if (refusal == ainode_dicom::TLS_PEER_CERT_REFUSED)
                return fail_all(files, n, DICOM_SEND_PERMANENT, DICOM_EREFUSED,
                                "TLS: the certificate of " + where + " is not trusted: " + why,
                                err, errlen);
            if (refusal == ainode_dicom::TLS_OUR_CERT_REFUSED)
                return fail_all(files, n, DICOM_SEND_PERMANENT, DICOM_EREFUSED,
                                "TLS: " + where + " refused our certificate: " + why, err,
                                errlen);
            return fail_all(files, n, DICOM_SEND_TRANSIENT, DICOM_ENETWORK,
                            "cannot open a TLS association with " + where + ": " + why, err,
                            errlen);
        }
        if (cond.bad())
            return fail_all(files, n, DICOM_SEND_TRANSIENT, DICOM_ENETWORK,
                            "cannot open an association with " + where + ": " + cond.text(), err,
                            errlen);

        bool broken = false;
        for (size_t i = 0; i < n; i++) {
            dicom_send_file *f = &files[i];
            if (broken) {
                set_file(f, DICOM_SEND_TRANSIENT, "association lost before sending");
                continue;
            }
            const T_ASC_PresentationContextID pres =
                contexts[std::make_pair(std::string(f->sop_class_uid),
                                        std::string(f->transfer_syntax))];
            T_ASC_PresentationContext pc;
            if (ASC_findAcceptedPresentationContext(g.assoc->params, pres, &pc).bad() ||
                pc.resultReason != ASC_P_ACCEPTANCE) {
                set_file(f, DICOM_SEND_PERMANENT,
                         "%s accepts no presentation context for SOP class %s in transfer "
                         "syntax %s",
                         peer->called_ae, f->sop_class_uid, f->transfer_syntax);
                continue;
            }
            if (access(f->path, R_OK) != 0) {
                // Not its path: the reason is logged, and the path of a
                // forwarded instance names its UIDs (status shows the item).
                set_file(f, DICOM_SEND_PERMANENT, "cannot read the file to send: %s",
                         std::strerror(errno));
                continue;
            }
            T_DIMSE_C_StoreRQ req;
            std::memset(&req, 0, sizeof req);
            req.MessageID = g.assoc->nextMsgID++;
            OFStandard::strlcpy(req.AffectedSOPClassUID, f->sop_class_uid,
                                sizeof req.AffectedSOPClassUID);
            OFStandard::strlcpy(req.AffectedSOPInstanceUID, f->sop_instance_uid,
                                sizeof req.AffectedSOPInstanceUID);
            req.DataSetType = DIMSE_DATASET_PRESENT;
            req.Priority = DIMSE_PRIORITY_MEDIUM;
            T_DIMSE_C_StoreRSP rsp;
            std::memset(&rsp, 0, sizeof rsp);
            DcmDataset *detail = nullptr;
            cond = DIMSE_storeUser(g.assoc, pres, &req, f->path, nullptr, nullptr, nullptr,
                                   DIMSE_NONBLOCKING, timeout, &rsp, &detail);
            delete detail;
            if (cond.bad()) {
                // Network error or timeout: the association is in an
                // unknown state and goes; the rest waits for the next try.
                set_file(f, DICOM_SEND_TRANSIENT, "sending failed: %s", cond.text());
                broken = true;
                continue;
            }
            f->answered = 1;
            f->status = rsp.DimseStatus;
            f->outcome = dicom_store_status_outcome(rsp.DimseStatus);
            if (f->outcome != DICOM_SEND_SENT)
                set_file(f, f->outcome, "%s answered status 0x%04x", peer->called_ae,
                         rsp.DimseStatus);
        }
        if (broken)
            ASC_abortAssociation(g.assoc);
        else if (ASC_releaseAssociation(g.assoc).bad())
            ASC_abortAssociation(g.assoc);
        return 0;
    } catch (const std::exception &e) {
        return fail_all(files, n, DICOM_SEND_TRANSIENT, DICOM_ENETWORK,
                        std::string("sending failed: ") + e.what(), err, errlen);
    } catch (...) {
        return fail_all(files, n, DICOM_SEND_TRANSIENT, DICOM_ENETWORK,
                        "sending failed: unknown error", err, errlen);
    }
}

} // extern "C"
