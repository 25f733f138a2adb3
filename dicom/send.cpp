// send.cpp — C-STORE SCU over DCMTK's DcmSCU, behind dicom.h.
//
// One association per call: the results of one study go together. Every
// file is proposed in its own SOP class and transfer syntax (a SEG is not
// among DCMTK's default presentation contexts, and nothing is transcoded);
// the peer's answer to each C-STORE is handed back as it came.

#include "dicom/dicom.h"
#include "dicom/error.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/scu.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>

namespace {

using ainode_dicom::copy_err;


} // namespace

extern "C" {

int dicom_store_status_ok(uint16_t status)
{
    // Success, and the warnings PS3.4 B.2.3 lists (coercion, elements
    // discarded, data set does not match SOP class): the peer kept it.
    return status == 0x0000 || status == 0x0001 || status == 0xB000 || status == 0xB006 ||
           status == 0xB007;
}

int dicom_send(const struct dicom_send_peer *peer, struct dicom_send_file *files, size_t n,
               char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        files[i].sent = 0;
        files[i].status = 0;
        files[i].error[0] = '\0';
    }
    try {
        DcmSCU scu;
        scu.setAETitle(peer->calling_ae);
        scu.setPeerAETitle(peer->called_ae);
        scu.setPeerHostName(peer->host);
        scu.setPeerPort(static_cast<Uint16>(peer->port));
        scu.setMaxReceivePDULength(ASC_MAXIMUMPDUSIZE);
        scu.setConnectionTimeout(peer->timeout_seconds);
        scu.setACSETimeout(static_cast<Uint32>(peer->timeout_seconds));
        scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
        scu.setDIMSETimeout(static_cast<Uint32>(peer->timeout_seconds));
        // One presentation context per (SOP class, transfer syntax) pair.
        std::set<std::pair<std::string, std::string>> contexts;
        for (size_t i = 0; i < n; i++)
            contexts.emplace(files[i].sop_class_uid, files[i].transfer_syntax);
        for (const auto &c : contexts) {
            OFList<OFString> ts;
            ts.push_back(c.second.c_str());
            scu.addPresentationContext(c.first.c_str(), ts);
        }
        OFCondition cond = scu.initNetwork();
        if (cond.good())
            cond = scu.negotiateAssociation();
        if (cond.bad()) {
            copy_err(err, errlen, std::string("cannot open an association with ") +
                                      peer->called_ae + " at " + peer->host + ":" +
                                      std::to_string(peer->port) + ": " + cond.text());
            return -1;
        }
        bool broken = false;
        for (size_t i = 0; i < n; i++) {
            struct dicom_send_file *f = &files[i];
            if (broken) {
                std::snprintf(f->error, sizeof f->error, "association lost before sending");
                continue;
            }
            T_ASC_PresentationContextID pres =
                scu.findPresentationContextID(f->sop_class_uid, f->transfer_syntax);
            if (pres == 0) {
                std::snprintf(f->error, sizeof f->error,
                              "the peer does not accept SOP class %s in transfer syntax %s",
                              f->sop_class_uid, f->transfer_syntax);
                continue;
            }
            Uint16 status = 0;
            cond = scu.sendSTORERequest(pres, f->path, nullptr, status);
            if (cond.bad()) {
                std::snprintf(f->error, sizeof f->error, "sending failed: %s", cond.text());
                broken = !scu.isConnected();
                continue;
            }
            f->sent = 1;
            f->status = status;
            if (!dicom_store_status_ok(status))
                std::snprintf(f->error, sizeof f->error, "the peer answered status 0x%04x",
                              status);
        }
        if (scu.isConnected()) {
            if (broken)
                scu.abortAssociation();
            else
                scu.releaseAssociation();
        }
        return 0;
    } catch (const std::exception &e) {
        copy_err(err, errlen, std::string("sending failed: ") + e.what());
    } catch (...) {
        copy_err(err, errlen, "sending failed: unknown error");
    }
    return -1;
}

} // extern "C"
