// server.cpp — C-ECHO / C-STORE SCP over DCMTK's dcmnet, behind network.h.
//
// Threads: dicom_server_run() owns the listening socket (bound to the
// configured address, which DCMTK 3.6's own acceptor cannot do) and only
// accepts connections. Each connection gets a thread of its own at once,
// which waits (ARTIM timeout) until the peer's A-ASSOCIATE-RQ is wholly in
// the socket's receive buffer, then hands the socket to dcmnet through
// dcmExternalSocketHandle. That variable is process-wide, so the hand-over
// is serialised by one mutex; as the request is already there, it is held
// only while dcmnet parses it. A peer that connects and says nothing thus
// holds one thread of its own and never delays another caller or a stop.
//
// A C-STORE data set is streamed from the network into the caller's
// temporary file exactly as it arrived (DIMSE_receiveDataSetInFile: no
// parsing, no transcoding, no copy in memory): receive.cpp. The file is then
// parsed only up to its small values to pick out the indexed attributes,
// and the caller's `stored` callback decides the response status.
//
// TLS: an optional second listening socket, with a network of its own
// whose transport layer is dcmtls (tls.cpp). Its connections wait only for
// the first bytes of the ClientHello, are handed over like the others, and
// the layer releases the hand-over as soon as dcmnet has taken the socket,
// so the handshake itself (several round trips, bounded by the ARTIM
// timeout) never holds the mutex. A stop or an eviction shuts a socket that
// is still in its handshake down (run_tls_connection). Plain DICOM on the
// TLS port and a TLS handshake on the plain port are told apart by their
// first byte and closed at once.

#include "dicom/image.h"
#include "dicom/internal.h"
#include "dicom/network.h"
#include "dicom/server_internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/oflog/oflog.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <list>
#include <map>
#include <memory>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

using ainode_dicom::copy_err;

using ainode_dicom::Association;
using ainode_dicom::Clock;
using ainode_dicom::handle_store;
using ainode_dicom::ms_since;
using ainode_dicom::pending_conn;
using ainode_dicom::trim;

// Transfer syntaxes we accept: everything a PACS or modality really sends.
// None is ever decoded on receipt, so accepting one costs nothing.
const char *const kTransferSyntaxes[] = {
    UID_LittleEndianImplicitTransferSyntax,
    UID_LittleEndianExplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_MPEG2MainProfileAtMainLevelTransferSyntax,
    UID_MPEG2MainProfileAtHighLevelTransferSyntax,
    UID_MPEG4HighProfileLevel4_1TransferSyntax,
    UID_MPEG4BDcompatibleHighProfileLevel4_1TransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For2DVideoTransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For3DVideoTransferSyntax,
    UID_MPEG4StereoHighProfileLevel4_2TransferSyntax,
    UID_HEVCMainProfileLevel5_1TransferSyntax,
    UID_HEVCMain10ProfileLevel5_1TransferSyntax,
};

bool is_supported_transfer_syntax(const char *uid)
{
    for (const char *ts : kTransferSyntaxes)
        if (std::strcmp(ts, uid) == 0)
            return true;
    return false;
}

// Storage SOP classes whose instances belong to a patient's study and
// series: every one DCMTK knows, and any other under the storage root, so
// that new classes from a newer modality are still stored. The
// "non-patient" classes (Hanging Protocol, Color Palette, implant
// templates, protocols) have no study or series to be stored under: they
// are refused here, where the sender learns it before sending anything.
bool is_storage_class(const char *uid)
{
    // Query models of protocols, under the storage root but no storage.
    static const char *const kNotStorage[] = {
        "1.2.840.10008.5.1.4.1.1.200.4",
        "1.2.840.10008.5.1.4.1.1.200.5",
        "1.2.840.10008.5.1.4.1.1.200.6",
    };
    for (const char *q : kNotStorage)
        if (std::strcmp(uid, q) == 0)
            return false;
    if (dcmIsaStorageSOPClassUID(uid, ESSC_NonPatient))
        return false;
    return dcmIsaStorageSOPClassUID(uid, ESSC_Patient) ||
           std::strncmp(uid, "1.2.840.10008.5.1.4.1.1.", 24) == 0;
}


// Closes FD if it still is the socket INO. dcmnet owns an accepted socket
// once it is handed over, and whether it closed it after a failure depends
// on how far it got (an ASC_receiveAssociation failure may leave an
// association with or without its transport connection). A descriptor
// number freed by dcmnet may already belong to another thread's file, so
// it is closed only when it still names our socket.
void close_if_ours(int fd, ino_t ino)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == ino)
        close(fd);
}

// dcmExternalSocketHandle is one process-wide variable.
std::mutex handover_mu;

} // namespace

namespace {

// Takes a slot for an association from CALLING: one of max_associations
// and one of that caller's max_associations_per_caller, both under the
// lock so that simultaneous requests cannot overshoot. Returns 0, or 1 when
// the node is full, 2 when the caller has all its slots.
int take_slot(dicom_server *srv, const std::string &calling)
{
    std::lock_guard<std::mutex> g(srv->mu);
    if (srv->active >= srv->max_associations)
        return 1;
    int &mine = srv->per_caller[calling];
    if (mine >= srv->max_per_caller) {
        if (mine == 0)
            srv->per_caller.erase(calling);
        return 2;
    }
    mine++;
    srv->active++;
    return 0;
}

void release_slot(dicom_server *srv, const std::string &calling)
{
    {
        std::lock_guard<std::mutex> g(srv->mu);
        srv->active--;
        auto it = srv->per_caller.find(calling);
        if (it != srv->per_caller.end() && --it->second <= 0)
            srv->per_caller.erase(it);
    }
    srv->cv.notify_all();
}

// Wall clock, ms since the epoch: what the audit trail records.
int64_t wall_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// What the audit trail says of a TLS caller: its certificate's subject.
std::string audit_tls_peer(const std::string &subject)
{
    return subject.empty() ? "(no certificate)" : subject;
}

// Tells the caller that an association request came to OUTCOME. TLS_PEER
// is NULL on a plain connection.
void report_ended(dicom_server *srv, const std::string &calling, const std::string &called,
                  const std::string &address, const std::string *tls_peer, int64_t started_ms,
                  unsigned stored, unsigned refused, const char *outcome,
                  dicom_rejection rejection = DICOM_REJECTION_NONE)
{
    if (!srv->ended)
        return;
    dicom_association_report r = {calling.c_str(),
                                  called.c_str(),
                                  address.c_str(),
                                  tls_peer ? tls_peer->c_str() : nullptr,
                                  started_ms,
                                  wall_ms(),
                                  stored,
                                  refused,
                                  outcome,
                                  rejection};
    srv->ended(srv->ud, &r);
}

// Sends A-ABORT and drops the connection without waiting on the peer:
// dcmnet's abort reads until the peer closes, which an unresponsive peer
// never does. Shutting down our reading side first makes that read end.
void abort_association(Association &a)
{
    shutdown(a.fd, SHUT_RD);
    ASC_abortAssociation(a.assoc);
}

void run_association(Association *a)
{
    dicom_server *srv = a->srv;
    srv->logp(2, "association.accepted", a->calling, a->address,
              "association from %s (%s) to %s accepted", a->calling.c_str(), a->address.c_str(),
              a->called.c_str());
    unsigned stores = 0;
    int idle_seconds = 0;
    for (;;) {
        T_ASC_PresentationContextID pres_id;
        T_DIMSE_Message msg;
        OFCondition cond = DIMSE_receiveCommand(a->assoc, DIMSE_NONBLOCKING, 1, &pres_id, &msg,
                                                nullptr);
        if (a->expired()) {
            // However busy: a peer must not hold a slot (and a thread) for ever.
            srv->logp(1, "association.aborted", a->calling, a->address,
                      "aborting association from %s: open for %d s "
                      "(node.max_association_seconds)",
                      a->calling.c_str(), srv->max_seconds);
            a->outcome = "aborted: time limit";
            abort_association(*a);
            break;
        }
        if (cond == DIMSE_NODATAAVAILABLE) {
            if (srv->must_abort()) {
                srv->logp(1, "association.aborted", a->calling, a->address,
                          "aborting association from %s at shutdown", a->calling.c_str());
                a->outcome = "aborted: shutdown";
                abort_association(*a);
                break;
            }
            if (++idle_seconds >= srv->timeout) {
                srv->logp(1, "association.aborted", a->calling, a->address,
                          "association from %s idle for %d s, aborting", a->calling.c_str(),
                          idle_seconds);
                a->outcome = "aborted: idle";
                abort_association(*a);
                break;
            }
            continue;
        }
        idle_seconds = 0;
        if (cond == DUL_PEERREQUESTEDRELEASE) {
            ASC_acknowledgeRelease(a->assoc);
            a->outcome = "released";
            break;
        }
        if (cond == DUL_PEERABORTEDASSOCIATION) {
            srv->logp(1, "association.aborted", a->calling, a->address,
                      "association from %s aborted by peer", a->calling.c_str());
            a->outcome = "aborted by peer";
            break;
        }
        if (cond.bad()) {
            srv->logp(1, "association.failed", a->calling, a->address,
                      "association from %s failed: %s", a->calling.c_str(), cond.text());
            a->outcome = "network error";
            abort_association(*a);
            break;
        }
        bool fatal = false;
        switch (msg.CommandField) {
        case DIMSE_C_ECHO_RQ:
            DIMSE_sendEchoResponse(a->assoc, pres_id, &msg.msg.CEchoRQ, STATUS_Success, nullptr);
            break;
        case DIMSE_C_STORE_RQ:
            handle_store(*a, pres_id, msg.msg.CStoreRQ, fatal);
            stores++;
            break;
        default:
            srv->logp(1, "association.aborted", a->calling, a->address,
                      "unsupported DIMSE command 0x%04x from %s", (unsigned)msg.CommandField,
                      a->calling.c_str());
            a->outcome = "aborted: unsupported command";
            fatal = true;
            break;
        }
        if (fatal) {
            if (!a->outcome)
                a->outcome = "aborted: protocol error";
            abort_association(*a);
            break;
        }
    }
    srv->logp(2, "association.ended", a->calling, a->address,
              "association from %s ended after %u C-STORE", a->calling.c_str(), stores);
    if (srv->association_end) {
        dicom_peer p = a->peer();
        srv->association_end(srv->ud, &p);
    }
    const std::string tls_peer = audit_tls_peer(a->tls_subject);
    report_ended(srv, a->calling, a->called, a->address, a->tls ? &tls_peer : nullptr,
                 a->started_ms, a->stored, a->refused, a->outcome ? a->outcome : "network error");
    ASC_dropSCPAssociation(a->assoc);
    ASC_destroyAssociation(&a->assoc);
    close_if_ours(a->fd, a->ino);
    release_slot(srv, a->calling);
    delete a;
}

// Drops and frees ASSOC, and closes its socket FD (INO) when dcmnet has not.
void drop_connection(T_ASC_Association *assoc, int fd, ino_t ino)
{
    if (assoc) {
        ASC_dropAssociation(assoc);
        ASC_destroyAssociation(&assoc);
    }
    close_if_ours(fd, ino);
}

void reject(T_ASC_Association *assoc, int fd, ino_t ino, T_ASC_RejectParametersResult result,
            T_ASC_RejectParametersSource source, T_ASC_RejectParametersReason reason)
{
    T_ASC_RejectParameters rej = {result, source, reason};
    ASC_rejectAssociation(assoc, &rej);
    drop_connection(assoc, fd, ino);
}

// Negotiates one association request read from an accepted socket, and
// runs the association on this thread when it is accepted.
void negotiate(dicom_server *srv, T_ASC_Association *assoc, int fd, ino_t ino,
               const std::string &address, bool tls)
{
    char calling[64] = "", called[64] = "", peer[128] = "";
    ASC_getAPTitles(assoc->params, calling, sizeof calling, called, sizeof called, nullptr, 0);
    ASC_getPresentationAddresses(assoc->params, peer, sizeof peer, nullptr, 0);
    // dcmnet reads the peer's address as IPv4 whatever it is: ours is right for IPv6 too.
    std::string calling_s = trim(calling), called_s = trim(called),
                peer_s = address.empty() ? std::string(peer) : address;
    const int64_t started_ms = wall_ms();
    // Known before any rejection, for the audit trail as for on_associate.
    std::string subject, cn;
    if (tls)
        ainode_dicom::tls_peer_subject(assoc, subject, cn);
    const std::string tls_peer = audit_tls_peer(subject);
    auto report = [&](const char *outcome, dicom_rejection why) {
        report_ended(srv, calling_s, called_s, peer_s, tls ? &tls_peer : nullptr, started_ms, 0,
                     0, outcome, why);
    };

    switch (take_slot(srv, calling_s)) {
    case 0:
        break;
    case 1:
        srv->logp(1, "association.rejected", calling_s, peer_s,
                  "refusing association from %s: %d associations already running",
                  calling_s.c_str(), srv->max_associations);
        reject(assoc, fd, ino, ASC_RESULT_REJECTEDTRANSIENT,
               ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
               ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
        report("rejected: max_associations reached", DICOM_REJECTION_MAX_ASSOCIATIONS);
        return;
    default:
        srv->logp(1, "association.rejected", calling_s, peer_s,
                  "refusing association from %s: it has %d associations running already "
                  "(node.max_associations_per_caller)",
                  calling_s.c_str(), srv->max_per_caller);
        reject(assoc, fd, ino, ASC_RESULT_REJECTEDTRANSIENT,
               ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
               ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
        report("rejected: max_associations_per_caller reached",
               DICOM_REJECTION_MAX_PER_CALLER);
        return;
    }
    dicom_peer p = {calling_s.c_str(), called_s.c_str(), peer_s.c_str(), 0, tls,
                    subject.empty() ? nullptr : subject.c_str(), cn.empty() ? nullptr : cn.c_str()};
    enum dicom_assoc_decision decision = srv->associate(srv->ud, &p);
    if (decision != DICOM_ASSOC_ACCEPT)
        release_slot(srv, calling_s);
    switch (decision) {
    case DICOM_ASSOC_ACCEPT:
        break;
    case DICOM_ASSOC_REJECT_CALLING_AE:
        srv->logp(1, "association.rejected", calling_s, peer_s,
                  "rejecting association from %s: calling AE title not allowed%s",
                  calling_s.c_str(), tls ? " (or not its certificate's CN)" : "");
        reject(assoc, fd, ino, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        report(tls ? "rejected: calling AE title not allowed (or not its certificate's CN)"
                   : "rejected: calling AE title not allowed",
               DICOM_REJECTION_CALLING_AE);
        return;
    case DICOM_ASSOC_REJECT_CALLED_AE:
        srv->logp(1, "association.rejected", calling_s, peer_s,
                  "rejecting association from %s: called AE title '%s' is not ours",
                  calling_s.c_str(), called_s.c_str());
        reject(assoc, fd, ino, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED);
        report("rejected: called AE title not ours", DICOM_REJECTION_CALLED_AE);
        return;
    case DICOM_ASSOC_REJECT_BUSY:
        reject(assoc, fd, ino, ASC_RESULT_REJECTEDTRANSIENT,
               ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
               ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
        report("rejected: busy", DICOM_REJECTION_BUSY);
        return;
    }

    // Accept Verification and every storage abstract syntax proposed, each
    // in the first of its proposed transfer syntaxes that we support: the
    // sender lists its own preference first (usually the encoding its file
    // already has), so honouring it keeps the instance as the sender has it.
    OFCondition cond = EC_Normal;
    int n = ASC_countPresentationContexts(assoc->params);
    for (int i = 0; i < n && cond.good(); i++) {
        T_ASC_PresentationContext pc;
        cond = ASC_getPresentationContext(assoc->params, i, &pc);
        if (cond.bad())
            break;
        if (std::strcmp(pc.abstractSyntax, UID_VerificationSOPClass) != 0 &&
            !is_storage_class(pc.abstractSyntax)) {
            cond = ASC_refusePresentationContext(assoc->params, pc.presentationContextID,
                                                 ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
            continue;
        }
        const char *chosen = nullptr;
        for (int t = 0; t < pc.transferSyntaxCount && !chosen; t++)
            if (is_supported_transfer_syntax(pc.proposedTransferSyntaxes[t]))
                chosen = pc.proposedTransferSyntaxes[t];
        cond = chosen ? ASC_acceptPresentationContext(assoc->params, pc.presentationContextID,
                                                      chosen)
                      : ASC_refusePresentationContext(assoc->params, pc.presentationContextID,
                                                      ASC_P_TRANSFERSYNTAXESNOTSUPPORTED);
    }
    if (cond.good())
        cond = ASC_acknowledgeAssociation(assoc);
    if (cond.bad()) {
        srv->logp(1, "association.failed", calling_s, peer_s,
                  "cannot acknowledge association from %s: %s", calling_s.c_str(), cond.text());
        drop_connection(assoc, fd, ino);
        release_slot(srv, calling_s);
        report("network error", DICOM_REJECTION_NONE);
        return;
    }
    Association *a = new Association{srv,       assoc,    fd,           ino,
                                     calling_s, called_s, peer_s, Clock::now(),
                                     ++srv->next_association_id, tls, subject, cn};
    a->started_ms = started_ms;
    run_association(a);
}

enum request_wait { REQUEST_READY, REQUEST_TIMEOUT, REQUEST_CLOSED, REQUEST_DROPPED,
                    REQUEST_WRONG_PORT };

// Waits until the whole A-ASSOCIATE-RQ PDU is in FD's receive buffer (then
// dcmnet reads it without waiting), or the ARTIM timer runs out, the peer
// closes, the server stops or the connection is evicted.
request_wait wait_for_request(dicom_server *srv, pending_conn &pc)
{
    const auto deadline = Clock::now() + std::chrono::seconds(srv->artim);
    size_t want = 6; // PDU type, reserved, 32-bit length
    std::vector<unsigned char> buf(want);
    for (;;) {
        if (srv->stopping.load() || pc.evicted.load())
            return REQUEST_DROPPED;
        long long left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())
                .count();
        if (left <= 0)
            return REQUEST_TIMEOUT;
        pollfd p = {pc.fd, POLLIN, 0};
        int rc = poll(&p, 1, (int)(left < 100 ? left : 100));
        if (rc < 0 && errno != EINTR)
            return REQUEST_CLOSED;
        if (rc <= 0)
            continue;
        buf.resize(want);
        ssize_t got = recv(pc.fd, buf.data(), want, MSG_PEEK | MSG_DONTWAIT);
        if (got == 0)
            return REQUEST_CLOSED; // without a word
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            return REQUEST_CLOSED;
        }
        // 0x16 opens a TLS handshake record, never a DICOM PDU: TLS on the
        // plain port, or anything but TLS on the TLS port, goes at once.
        if (pc.tls != (buf[0] == 0x16))
            return REQUEST_WRONG_PORT;
        if (pc.tls)
            return REQUEST_READY; // the handshake runs outside the hand-over
        if ((size_t)got < want) {
            // Part of it: poll would report the same bytes again at once.
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
        }
        if (want == 6) {
            size_t len = (size_t)buf[2] << 24 | (size_t)buf[3] << 16 | (size_t)buf[4] << 8 |
                         (size_t)buf[5];
            // Requests are a few KB; a larger one is left to dcmnet's own timeout.
            want = 6 + (len < 65536 ? len : 65536);
            if (want > 6)
                continue;
        }
        return REQUEST_READY;
    }
}

void remove_pending(dicom_server *srv, const std::shared_ptr<pending_conn> &pc)
{
    std::lock_guard<std::mutex> g(srv->mu);
    srv->pending.remove(pc);
}

// The peer's numeric address, for log lines before dcmnet has it.
std::string peer_address(int fd)
{
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    if (getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0)
        getnameinfo(reinterpret_cast<sockaddr *>(&ss), len, host, sizeof host, nullptr, 0,
                    NI_NUMERICHOST);
    return host;
}

// Bounds each blocking read and write on FD: OpenSSL reads a whole record
// once dcmnet has seen its first bytes, so a peer stalling mid-record holds
// its thread until then (dcmnet's own default: 60 s).
void set_socket_timeouts(int fd, int seconds)
{
    timeval tv = {seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// Ends the handshakes in progress (under srv->mu): their reads return at
// once. PC->fd is our own descriptor, open until PC leaves the pending
// list, so it cannot name another socket by then.
void shutdown_handshake(pending_conn &pc)
{
    if (pc.handshaking)
        shutdown(pc.fd, SHUT_RDWR);
}

// The rest of a connection to the TLS port once its ClientHello has begun
// to arrive: hand-over, handshake, association request, association.
void run_tls_connection(dicom_server *srv, const std::shared_ptr<pending_conn> &pc)
{
    const int fd = pc->fd;
    const std::string addr = peer_address(fd);
    // dcmnet gets a duplicate and closes it when it is done; ours stays
    // open while the connection is pending, for shutdown_handshake.
    const int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    bool go;
    {
        std::lock_guard<std::mutex> g(srv->mu);
        go = dfd >= 0 && !srv->stopping.load() && !pc->evicted.load();
        pc->handshaking = go;
    }
    if (!go) {
        if (dfd >= 0)
            close(dfd);
        remove_pending(srv, pc);
        close(fd);
        return;
    }
    T_ASC_Association *assoc = nullptr;
    OFCondition cond;
    bool consumed;
    {
        std::unique_lock<std::mutex> lk(handover_mu);
        dcmExternalSocketHandle.set(dfd);
        ainode_dicom::tls_handover_begin(&lk, srv->artim); // the layer unlocks LK (tls.cpp)
        cond = ASC_receiveAssociation(srv->tls_net, &assoc, srv->max_pdu, nullptr, nullptr,
                                      OFTrue, DUL_NOBLOCK, srv->artim);
        consumed = ainode_dicom::tls_handover_end();
        if (lk.owns_lock())
            dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    }
    {
        std::lock_guard<std::mutex> g(srv->mu);
        pc->handshaking = false;
        srv->pending.remove(pc);
    }
    close(fd);
    if (cond.bad()) {
        const std::string why = ainode_dicom::tls_failure_text(cond);
        srv->logp(1, "tls.failed", std::string(), addr, "TLS connection from %s failed: %s",
                  addr.c_str(), why.c_str());
        // A caller refused at the handshake is audited, though no request was read.
        const std::string failed = "(handshake failed)";
        report_ended(srv, "", "", pc->address, &failed, wall_ms(), 0, 0,
                     ("rejected: TLS: " + why).c_str(), DICOM_REJECTION_TLS);
        if (consumed) {
            drop_connection(assoc, dfd, pc->ino); // dfd is the same socket as fd
        } else {
            drop_connection(assoc, -1, 0);
            close(dfd);
        }
        return;
    }
    srv->log(2, "TLS connection from %s: %s", addr.c_str(),
             ainode_dicom::tls_take_session().c_str());
    set_socket_timeouts(dfd, srv->timeout);
    negotiate(srv, assoc, dfd, pc->ino, pc->address, true);
}

// The thread of one accepted connection: its association request, then
// the association itself.
void run_connection(dicom_server *srv, std::shared_ptr<pending_conn> pc)
{
    const int fd = pc->fd;
    const request_wait w = wait_for_request(srv, *pc);
    if (w != REQUEST_READY) {
        if (w == REQUEST_TIMEOUT)
            srv->log(1, "closing a connection: no association request within %d s", srv->artim);
        if (w == REQUEST_WRONG_PORT)
            srv->log(1, "closing a connection from %s: %s", peer_address(fd).c_str(),
                     pc->tls ? "not TLS on the TLS port" : "TLS on the plain DICOM port");
        close(fd);
        remove_pending(srv, pc);
        srv->cv.notify_all();
        return;
    }
    if (pc->tls) {
        run_tls_connection(srv, pc);
        srv->cv.notify_all();
        return;
    }
    T_ASC_Association *assoc = nullptr;
    OFCondition cond;
    {
        std::lock_guard<std::mutex> g(handover_mu);
        dcmExternalSocketHandle.set(fd);
        cond = ASC_receiveAssociation(srv->net, &assoc, srv->max_pdu, nullptr, nullptr, OFFalse,
                                      DUL_NOBLOCK, srv->artim);
        dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    }
    remove_pending(srv, pc);
    if (cond.bad()) {
        srv->log(1, "association request failed: %s", cond.text());
        drop_connection(assoc, fd, pc->ino);
        // It did send a request: audited, with what little is known.
        report_ended(srv, "", "", pc->address, nullptr, wall_ms(), 0, 0,
                     "rejected: unreadable request", DICOM_REJECTION_UNREADABLE);
    } else {
        negotiate(srv, assoc, fd, pc->ino, pc->address, false);
    }
    srv->cv.notify_all();
}

int open_listen_socket(const std::string &addr, int port, std::string &err)
{
    addrinfo hints;
    std::memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC; // IPv4 or IPv6 (e.g. ::1)
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo *res = nullptr;
    std::string port_s = std::to_string(port);
    int rc = getaddrinfo(addr.c_str(), port_s.c_str(), &hints, &res);
    if (rc != 0) {
        err = "cannot resolve bind address '" + addr + "': " + gai_strerror(rc);
        return -1;
    }
    // A name with both (localhost) listens on its IPv4 address, as before.
    addrinfo *use = res;
    for (addrinfo *r = res; r; r = r->ai_next)
        if (r->ai_family == AF_INET) {
            use = r;
            break;
        }
    int fd = socket(use->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, use->ai_addr, use->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        err = "cannot listen on " + addr + ":" + port_s + ": " + std::strerror(errno);
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

// The TLS listener: its socket, its network, its dcmtls layer.
int open_tls_listener(dicom_server *srv, const dicom_server_config *cfg, std::string &err)
{
    srv->tls_port = cfg->tls_port;
    srv->tls_layer = ainode_dicom::tls_make_layer(NET_ACCEPTOR, cfg->tls, true, err);
    if (!srv->tls_layer) {
        err = "TLS listener: " + err;
        return DICOM_EINVAL;
    }
    srv->tls_listen_fd = open_listen_socket(srv->bind_addr, srv->tls_port, err);
    if (srv->tls_listen_fd < 0)
        return DICOM_ENETWORK;
    // As for the plain network: no listening socket of dcmnet's own.
    dcmExternalSocketHandle.set(srv->tls_listen_fd);
    OFCondition cond =
        ASC_initializeNetwork(NET_ACCEPTOR, srv->tls_port, srv->timeout, &srv->tls_net);
    dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
    if (cond.good())
        cond = ASC_setTransportLayer(srv->tls_net, srv->tls_layer.get(), 0);
    if (cond.bad()) {
        err = std::string("cannot initialise the DICOM TLS network: ") + cond.text();
        return DICOM_ENETWORK;
    }
    return 0;
}

} // namespace

extern "C" {

const char *dicom_strerror(int code)
{
    switch (code) {
    case DICOM_OK: return "success";
    case DICOM_EINVAL: return "invalid argument";
    case DICOM_ENOMEM: return "out of memory";
    case DICOM_EIO: return "file cannot be read or written";
    case DICOM_EFORMAT: return "unsupported or malformed DICOM content";
    case DICOM_ENETWORK: return "network failure";
    case DICOM_EREFUSED: return "refused by the peer";
    case DICOM_EDICT: return "data dictionary not loaded";
    case DICOM_ERANGE: return "pixel values out of the narrow type's range";
    default: return "unknown error";
    }
}

int dicom_init(char *err, size_t errlen)
{
    // Debian's DCMTK leaves Nagle's algorithm on; every socket dcmnet opens
    // or accepts reads this variable. Without it each C-STORE stalls ~40 ms.
    setenv("TCP_NODELAY", "1", 1);
    if (!dcmDataDict.isDictionaryLoaded()) {
        return copy_err(err, errlen,
                        "the DICOM data dictionary is not loaded (check DCMDICTPATH)", DICOM_EDICT);
    }
    // dcmnet/dcmdata report problems through their return values, which we
    // log ourselves; their own logger would print raw lines to stderr.
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    dcmDisableGethostbyaddr.set(OFTrue); // no reverse DNS on every association
    return 0;
}

int dicom_server_create(const struct dicom_server_config *cfg, struct dicom_server **out,
                        char *err, size_t errlen)
{
    *out = nullptr;
    dicom_server *srv = new (std::nothrow) dicom_server;
    if (!srv) {
        return copy_err(err, errlen, "out of memory", DICOM_ENOMEM);
    }
    srv->ae_title = cfg->ae_title;
    srv->bind_addr = cfg->bind;
    srv->port = cfg->port;
    srv->max_associations = cfg->max_associations;
    srv->max_pdu = cfg->max_pdu;
    srv->timeout = cfg->network_timeout_seconds > 0 ? cfg->network_timeout_seconds : 60;
    srv->artim = cfg->artim_timeout_seconds > 0 ? cfg->artim_timeout_seconds : 10;
    srv->max_pending = (size_t)(cfg->max_associations > 32 ? 2 * cfg->max_associations : 64);
    srv->max_per_caller = cfg->max_associations_per_caller > 0 ? cfg->max_associations_per_caller
                                                               : cfg->max_associations;
    srv->max_seconds = cfg->max_association_seconds;
    srv->max_dataset_bytes = cfg->max_dataset_bytes;
    srv->admit = cfg->admit;
    srv->associate = cfg->associate;
    srv->stored = cfg->stored;
    srv->store_begin = cfg->store_begin;
    srv->association_end = cfg->association_end;
    srv->ended = cfg->ended;
    srv->temp_path = cfg->temp_path;
    srv->log_fn = cfg->log;
    srv->ud = cfg->ud;
    for (size_t i = 0; i < cfg->n_keywords; i++) {
        DcmTag tag;
        if (DcmTag::findTagFromName(cfg->keywords[i], tag).bad()) {
            delete srv;
            return copy_err(err, errlen, std::string("unknown DICOM keyword ") + cfg->keywords[i],
                            DICOM_EINVAL);
        }
        srv->keywords.emplace_back(cfg->keywords[i]);
        srv->tags.push_back(tag);
    }
    std::string e;
    if (srv->port <= 0 && cfg->tls_port <= 0) {
        delete srv;
        return copy_err(err, errlen, "no port to listen on", DICOM_EINVAL);
    }
    // Port 0: TLS only, no plain listener.
    if (srv->port > 0) {
        srv->listen_fd = open_listen_socket(srv->bind_addr, srv->port, e);
        if (srv->listen_fd < 0) {
            delete srv;
            return copy_err(err, errlen, e, DICOM_ENETWORK);
        }
        // dcmnet must not open a listening socket of its own (it would bind
        // every interface): with dcmExternalSocketHandle set while the
        // network is initialised it skips that, and connections are then
        // handed over one by one through the same variable in
        // dicom_server_run().
        dcmExternalSocketHandle.set(srv->listen_fd);
        OFCondition cond =
            ASC_initializeNetwork(NET_ACCEPTOR, srv->port, srv->timeout, &srv->net);
        dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
        if (cond.good()) {
            srv->plain_layer = ainode_dicom::quickack_make_layer();
            cond = ASC_setTransportLayer(srv->net, srv->plain_layer.get(), 0);
            if (cond.bad())
                ASC_dropNetwork(&srv->net);
        }
        if (cond.bad()) {
            close(srv->listen_fd);
            delete srv;
            return copy_err(err, errlen,
                            std::string("cannot initialise the DICOM network: ") + cond.text(),
                            DICOM_ENETWORK);
        }
    }
    if (cfg->tls_port > 0) {
        int rc = open_tls_listener(srv, cfg, e);
        if (rc != 0) {
            dicom_server_destroy(srv);
            return copy_err(err, errlen, e, rc);
        }
    }
    *out = srv;
    return 0;
}

int dicom_server_run(struct dicom_server *srv)
{
    if (srv->listen_fd >= 0)
        srv->log(2, "listening on %s:%d as %s", srv->bind_addr.c_str(), srv->port,
                 srv->ae_title.c_str());
    int backoff_ms = 0;              // after accept() ran out of descriptors or memory
    Clock::time_point last_backoff_log;
    long long backoff_failures = 0;  // since the last log line
    long long refused = 0;           // connections from addresses not allowed, likewise
    Clock::time_point last_refused_log;
    if (srv->tls_listen_fd >= 0)
        srv->log(2, "listening for DICOM TLS on %s:%d", srv->bind_addr.c_str(), srv->tls_port);
    bool tls_turn = false; // both ports ready: they take turns, neither starves
    while (!srv->stopping.load()) {
        pollfd pfd[2] = {{srv->listen_fd, POLLIN, 0}, {srv->tls_listen_fd, POLLIN, 0}};
        int rc = poll(pfd, srv->tls_listen_fd >= 0 ? 2 : 1, 200);
        if (rc <= 0)
            continue;
        const bool plain_ready = pfd[0].revents & POLLIN, tls_ready = pfd[1].revents & POLLIN;
        const bool tls = tls_ready && (!plain_ready || (tls_turn = !tls_turn));
        sockaddr_storage from;
        socklen_t from_len = sizeof from;
        int fd = accept4(tls ? srv->tls_listen_fd : srv->listen_fd, (sockaddr *)&from, &from_len,
                         SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
                continue; // the connection went away (ECONNABORTED, ...): next one
            // The pending connection stays queued and poll() reports it at
            // once again: without a pause this loop would spin at full CPU
            // until a descriptor is freed. Wait 100 ms, doubling to 1 s.
            const bool first = backoff_ms == 0;
            backoff_ms = first ? 100 : std::min(backoff_ms * 2, 1000);
            backoff_failures++;
            if (first || ms_since(last_backoff_log) >= 10000) { // one line per 10 s
                srv->log(0, "cannot accept connections: %s (%lld time%s); retrying every %d ms",
                         std::strerror(e), backoff_failures, backoff_failures == 1 ? "" : "s",
                         backoff_ms);
                last_backoff_log = Clock::now();
                backoff_failures = 0;
            }
            for (int slept = 0; slept < backoff_ms && !srv->stopping.load(); slept += 50)
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            continue;
        }
        if (backoff_ms) {
            srv->log(2, "accepting connections again");
            backoff_ms = 0;
            backoff_failures = 0;
        }
        char addr[INET6_ADDRSTRLEN] = "";
        if (from.ss_family == AF_INET)
            inet_ntop(AF_INET, &((sockaddr_in *)&from)->sin_addr, addr, sizeof addr);
        else if (from.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((sockaddr_in6 *)&from)->sin6_addr, addr, sizeof addr);
        if (srv->admit) {
            if (!srv->admit(srv->ud, addr)) {
                // Closed before a thread or a byte of DICOM is spent on it.
                close(fd);
                refused++;
                if (last_refused_log == Clock::time_point() ||
                    ms_since(last_refused_log) >= 10000) { // one line per 10 s
                    srv->log(1, "closed %lld connection%s from addresses outside "
                                "node.allowed_addresses (last: %s)",
                             refused, refused == 1 ? "" : "s", addr);
                    last_refused_log = Clock::now();
                    refused = 0;
                }
                continue;
            }
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct stat st;
        std::shared_ptr<pending_conn> pc;
        try {
            pc = std::make_shared<pending_conn>();
        } catch (...) {
            close(fd);
            continue;
        }
        pc->fd = fd;
        pc->ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
        try {
            pc->address = addr;
        } catch (...) {
            // no memory for a short string: dcmnet's own (IPv4) reading of it
        }
        pc->tls = tls;
        {
            std::lock_guard<std::mutex> g(srv->mu);
            if (srv->pending.size() >= srv->max_pending) {
                // The oldest silent connection makes room (see max_pending).
                srv->pending.front()->evicted.store(true);
                shutdown_handshake(*srv->pending.front());
                srv->pending.pop_front();
                srv->log(1, "%zu connections without an association request: closing the "
                            "oldest", srv->max_pending);
            }
            srv->pending.push_back(pc);
            srv->threads++;
        }
        try {
            std::thread([srv, pc] {
                run_connection(srv, pc);
                std::lock_guard<std::mutex> g(srv->mu);
                srv->threads--;
                srv->cv.notify_all();
            }).detach();
        } catch (...) {
            // The thread never ran: the socket is still ours alone.
            srv->log(0, "cannot start a thread for a connection");
            close(fd);
            std::lock_guard<std::mutex> g(srv->mu);
            srv->pending.remove(pc);
            srv->threads--;
        }
    }
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    srv->listen_fd = -1;
    if (srv->tls_listen_fd >= 0) {
        close(srv->tls_listen_fd);
        srv->tls_listen_fd = -1;
    }
    std::unique_lock<std::mutex> lk(srv->mu);
    for (auto &p : srv->pending)
        shutdown_handshake(*p);
    srv->cv.wait(lk, [srv] { return srv->threads == 0; });
    return 0;
}

void dicom_server_stop(struct dicom_server *srv, int grace_seconds)
{
    srv->stop_time = Clock::now();
    srv->abort_after_ms.store((long long)grace_seconds * 1000);
    srv->stopping.store(true);
}

int dicom_server_active(struct dicom_server *srv)
{
    std::lock_guard<std::mutex> g(srv->mu);
    return srv->active;
}

void dicom_server_destroy(struct dicom_server *srv)
{
    if (!srv)
        return;
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->net)
        ASC_dropNetwork(&srv->net);
    if (srv->tls_listen_fd >= 0)
        close(srv->tls_listen_fd);
    if (srv->tls_net)
        ASC_dropNetwork(&srv->tls_net);
    delete srv;
}

const char *dicom_toolkit_version(void)
{
    return OFFIS_DCMTK_VERSION;
}

void dicom_new_uid(char uid[65])
{
    // 2.25.<the UUID as one decimal integer>: 128 random bits (version 4
    // UUID) need no registered root and never collide in practice.
    unsigned char b[16];
    FILE *f = std::fopen("/dev/urandom", "rb");
    size_t got = f ? std::fread(b, 1, sizeof b, f) : 0;
    if (f)
        std::fclose(f);
    if (got != sizeof b) {
        // No /dev/urandom: DCMTK's own generator (site root, time, pid).
        char tmp[65];
        dcmGenerateUniqueIdentifier(tmp);
        std::snprintf(uid, 65, "%s", tmp);
        return;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); // version 4
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); // variant 10
    // Base-256 to base-10 by repeated division of the big number.
    char digits[40];
    int nd = 0;
    unsigned char n[16];
    std::memcpy(n, b, sizeof n);
    for (;;) {
        int zero = 1;
        unsigned rem = 0;
        for (int i = 0; i < 16; i++) {
            unsigned cur = rem * 256 + n[i];
            n[i] = (unsigned char)(cur / 10);
            rem = cur % 10;
            if (n[i])
                zero = 0;
        }
        digits[nd++] = (char)('0' + rem);
        if (zero)
            break;
    }
    int o = std::snprintf(uid, 65, "2.25.");
    while (nd > 0 && o < 64)
        uid[o++] = digits[--nd];
    uid[o] = '\0';
}

void dicom_free_values(char **values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(values[i]);
        values[i] = nullptr;
    }
}

} // extern "C"
