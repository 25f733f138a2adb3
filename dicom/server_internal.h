// server_internal.h — inside dicom/ only: the state of the server and of
// one association, shared by server.cpp (listening, negotiation, the
// association loop) and receive.cpp (a C-STORE received and answered).
#ifndef AINODE_DICOM_SERVER_INTERNAL_H
#define AINODE_DICOM_SERVER_INTERNAL_H

#include "dicom/internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctagkey.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ainode_dicom {

using Clock = std::chrono::steady_clock;

// S without its leading and trailing spaces (DICOM pads to even length).
inline std::string trim(const char *s)
{
    std::string r(s ? s : "");
    size_t b = r.find_first_not_of(' ');
    size_t e = r.find_last_not_of(' ');
    return b == std::string::npos ? std::string() : r.substr(b, e - b + 1);
}

inline long long ms_since(Clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// A connection whose A-ASSOCIATE-RQ has not arrived yet.
struct pending_conn {
    int fd;
    ino_t ino;                     // of the socket: see close_if_ours()
    std::string address;           // the peer's, numeric (dcmnet's is IPv4 only)
    std::atomic<bool> evicted{false};
    bool tls = false;              // accepted on the TLS port
    bool handshaking = false;      // in its TLS handshake (under dicom_server::mu)
};

} // namespace ainode_dicom

struct dicom_server {
    std::string ae_title, bind_addr;
    int port = 0, max_associations = 1, max_pdu = ASC_DEFAULTMAXPDU, timeout = 60, artim = 10;
    int max_per_caller = 1, max_seconds = 0;
    uint64_t max_dataset_bytes = 0; // 0: no limit
    std::vector<std::string> keywords;
    std::vector<DcmTagKey> tags;
    dicom_admit_fn admit = nullptr;
    dicom_associate_fn associate = nullptr;
    dicom_stored_fn stored = nullptr;
    dicom_store_begin_fn store_begin = nullptr;
    dicom_association_end_fn association_end = nullptr;
    dicom_association_ended_fn ended = nullptr;
    std::atomic<uint64_t> next_association_id{0};
    dicom_temp_path_fn temp_path = nullptr;
    dicom_log_fn log_fn = nullptr;
    void *ud = nullptr;

    int listen_fd = -1;
    T_ASC_Network *net = nullptr;
    std::atomic<bool> stopping{false};
    std::atomic<long long> abort_after_ms{-1}; // since stop_time; -1 = never
    ainode_dicom::Clock::time_point stop_time;
    std::mutex mu;
    std::condition_variable cv;
    int active = 0;                // associations accepted or being decided on
    std::map<std::string, int> per_caller; // of ACTIVE, by calling AE title
    // Connections still waiting for their A-ASSOCIATE-RQ. They do not count
    // against max_associations (silent peers would lock real callers out);
    // they are bounded on their own instead: beyond max_pending the oldest
    // one is closed, so a flood of silent connections costs at most
    // max_pending threads and a caller that speaks always gets through.
    std::list<std::shared_ptr<ainode_dicom::pending_conn>> pending;
    size_t max_pending = 64;
    int threads = 0;               // connection threads still running

    // The TLS listener, when configured (tls_listen_fd < 0: none). The
    // network only points to the layer, which outlives it.
    int tls_port = 0;
    int tls_listen_fd = -1;
    T_ASC_Network *tls_net = nullptr;
    std::unique_ptr<DcmTransportLayer> tls_layer;
    // The plain listener's transport (quickack.cpp); the network points to it.
    std::unique_ptr<DcmTransportLayer> plain_layer;

    void log(int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)))
    {
        va_list ap;
        va_start(ap, fmt);
        vlog(level, nullptr, nullptr, nullptr, fmt, ap);
        va_end(ap);
    }

    // A line about one peer: EVENT names it, PEER (its calling AE title)
    // and ADDR (its address) are fields of their own.
    void logp(int level, const char *event, const std::string &peer, const std::string &addr,
              const char *fmt, ...) __attribute__((format(printf, 6, 7)))
    {
        va_list ap;
        va_start(ap, fmt);
        vlog(level, event, peer.empty() ? nullptr : peer.c_str(),
             addr.empty() ? nullptr : addr.c_str(), fmt, ap);
        va_end(ap);
    }

    void vlog(int level, const char *event, const char *peer, const char *addr, const char *fmt,
              va_list ap)
    {
        if (!log_fn)
            return;
        char buf[512];
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        log_fn(ud, level, event, peer, addr, buf);
    }

    bool must_abort()
    {
        long long after = abort_after_ms.load();
        return stopping.load() && after >= 0 && ainode_dicom::ms_since(stop_time) >= after;
    }
};

namespace ainode_dicom {

struct Association {
    dicom_server *srv;
    T_ASC_Association *assoc;
    int fd;    // the accepted socket, owned by dcmnet
    ino_t ino; // of that socket
    std::string calling, called, address;
    Clock::time_point started;
    uint64_t id;
    bool tls;
    std::string tls_subject, tls_cn; // empty: no certificate shown
    // For the audit trail (dicom_association_report).
    int64_t started_ms = 0;
    unsigned stored = 0, refused = 0;
    const char *outcome = nullptr; // why handle_store ended it, when it did

    dicom_peer peer() const
    {
        return dicom_peer{calling.c_str(),
                          called.c_str(),
                          address.c_str(),
                          id,
                          tls,
                          tls_subject.empty() ? nullptr : tls_subject.c_str(),
                          tls_cn.empty() ? nullptr : tls_cn.c_str()};
    }

    // True once the association has run longer than max_association_seconds.
    bool expired() const
    {
        return srv->max_seconds > 0 && ms_since(started) >= (long long)srv->max_seconds * 1000;
    }
};

// Receives the data set of the C-STORE request REQ into a temporary file,
// hands it to the node and answers (receive.cpp). FATAL is set when the
// association cannot go on.
void handle_store(Association &a, T_ASC_PresentationContextID pres_id, T_DIMSE_C_StoreRQ &req,
                  bool &fatal);

} // namespace ainode_dicom

#endif
