/*
 * dicom/network — the DICOM network: a C-ECHO / C-STORE SCP (the server)
 * and a C-STORE SCU (sending results).
 *
 * A dicom_server accepts associations and streams each received dataset,
 * exactly as it arrived, into a file the caller names. The caller decides
 * everything else through callbacks:
 *   - associate: accept or reject an association request;
 *   - stored:    make a received file durable; its return value is the
 *                C-STORE response status.
 * dicom_server_run() blocks; call it from a thread of its own and stop it
 * from any thread with dicom_server_stop().
 */
#ifndef AINODE_DICOM_NETWORK_H
#define AINODE_DICOM_NETWORK_H

#include "dicom/dicom.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* C-STORE response statuses (PS3.4 B.2.3, PS3.7 C). */
enum {
    DICOM_STATUS_SUCCESS = 0x0000,
    DICOM_STATUS_OUT_OF_RESOURCES = 0xA700,
    DICOM_STATUS_DATASET_MISMATCH = 0xA900,
    DICOM_STATUS_CANNOT_UNDERSTAND = 0xC000,
};

/* A-ASSOCIATE-RJ decisions (PS3.8 9.3.4). */
enum dicom_assoc_decision {
    DICOM_ASSOC_ACCEPT = 0,
    DICOM_ASSOC_REJECT_CALLING_AE,   /* permanent, service-user, calling AE not recognized */
    DICOM_ASSOC_REJECT_CALLED_AE,    /* permanent, service-user, called AE not recognized */
    DICOM_ASSOC_REJECT_BUSY,         /* transient, service-provider, local limit exceeded */
};

struct dicom_peer {
    const char *calling_ae;
    const char *called_ae;
    const char *address;
    uint64_t association_id;         /* unique while the server runs; 0 before acceptance */
    int tls;                         /* 1: the association runs over DICOM TLS */
    const char *tls_subject;         /* the caller's certificate subject; NULL: none shown */
    const char *tls_common_name;     /* its CN; NULL: none */
};

/* Values of the keywords passed in dicom_server_config, read from the
 * stored file; NULL where absent. */
struct dicom_received {
    const char *temp_path;
    const char *sop_class_uid;       /* from the C-STORE request */
    const char *sop_instance_uid;    /* from the C-STORE request */
    const char *transfer_syntax;     /* of the accepted presentation context */
    const char *const *values;       /* one per keyword */
    const struct dicom_peer *peer;
};

/* Whether a connection from ADDRESS (numeric IPv4 or IPv6 text) may go on. Called
 * on the accepting thread before anything is read from the connection; 0
 * closes it at once. */
typedef int (*dicom_admit_fn)(void *ud, const char *address);
typedef enum dicom_assoc_decision (*dicom_associate_fn)(void *ud, const struct dicom_peer *p);
/* Returns the C-STORE status. ERR (may stay empty) explains a failure. */
typedef uint16_t (*dicom_stored_fn)(void *ud, const struct dicom_received *r, char *err,
                                    size_t errlen);
/* Called for each C-STORE before its data set is read: 0 to receive it, or
 * the status to answer once the data set has been read off the network and
 * dropped (COMMENT, LEN bytes, may explain it). */
typedef uint16_t (*dicom_store_begin_fn)(void *ud, const struct dicom_peer *p, char *comment,
                                         size_t len);
/* An accepted association has ended (released, aborted or failed). */
typedef void (*dicom_association_end_fn)(void *ud, const struct dicom_peer *p);
/*
 * What became of one association request, for the audit trail: reported
 * once per connection that sent an A-ASSOCIATE-RQ, when it has ended,
 * whether it was accepted (released, aborted, failed) or rejected, and
 * once per TLS connection that failed before its request was read (at its
 * handshake: outcome "rejected: TLS: <reason>", no AE titles). Any other
 * connection closed before it sent a request (refused by address, silent
 * until the ARTIM timer, closed, on the wrong port, or cut at a stop) is
 * no association and is not reported; the log tells of it.
 */
/* Why an association request was rejected, as a type (the outcome text
 * says it in words): what a counter per reason is labelled with. */
enum dicom_rejection {
    DICOM_REJECTION_NONE = 0,        /* accepted */
    DICOM_REJECTION_MAX_ASSOCIATIONS,
    DICOM_REJECTION_MAX_PER_CALLER,  /* max_associations_per_caller */
    DICOM_REJECTION_CALLING_AE,
    DICOM_REJECTION_CALLED_AE,
    DICOM_REJECTION_BUSY,
    DICOM_REJECTION_TLS,             /* the TLS handshake failed */
    DICOM_REJECTION_UNREADABLE,      /* the request could not be read */
};

struct dicom_association_report {
    const char *calling_ae;          /* as requested; "" when the request was unreadable */
    const char *called_ae;
    const char *address;             /* the peer's numeric address */
    const char *tls_peer;            /* on a TLS connection, the subject of the peer's
                                      * certificate ("/CN=..."), "(no certificate)" or
                                      * "(handshake failed)"; NULL on a plain one */
    int64_t started_ms, ended_ms;    /* wall clock, ms since the epoch: the request read,
                                      * the association over */
    unsigned stored;                 /* C-STOREs answered with success or a warning */
    unsigned refused;                /* C-STOREs answered with a failure status */
    const char *outcome;             /* released | aborted by peer | aborted: idle |
                                      * aborted: time limit | aborted: shutdown |
                                      * aborted: <protocol problem> | network error |
                                      * rejected: <reason> (rejected: TLS: <reason>) */
    enum dicom_rejection rejection;  /* NONE unless the outcome is "rejected: ..." */
};
typedef void (*dicom_association_ended_fn)(void *ud, const struct dicom_association_report *r);
/* Returns a fresh temporary path for the next incoming instance. */
typedef int (*dicom_temp_path_fn)(void *ud, char *buf, size_t len);
/* A line for the log: LEVEL 0 error .. 3 debug; EVENT (a dotted name),
 * PEER (a calling AE title) and ADDR (a peer's address) may be NULL. */
typedef void (*dicom_log_fn)(void *ud, int level, const char *event, const char *peer,
                             const char *addr, const char *msg);

/* How a TLS end point checks the certificate its peer presents. */
enum dicom_tls_verify {
    DICOM_TLS_VERIFY_REQUIRED = 0, /* a certificate the CA bundle trusts, or no connection */
    DICOM_TLS_VERIFY_OPTIONAL,     /* none is accepted; one that is presented must be trusted */
    DICOM_TLS_VERIFY_OFF,          /* whatever is presented is accepted */
};

/* DICOM TLS (PS3.15 B.9) under the BCP 195 non-downgrading profile: TLS
 * 1.2 or later. Files are PEM; the private key must not be encrypted (a
 * node starts unattended). The strings are only read during the call they
 * are passed to. */
struct dicom_tls_config {
    const char *certificate;       /* ours; NULL: none (a client without one) */
    const char *private_key;       /* the certificate's key; NULL with certificate NULL */
    const char *ca_certificates;   /* trusted CAs; NULL only when verify is OFF */
    enum dicom_tls_verify verify;
};

struct dicom_server_config {
    const char *ae_title;
    const char *bind;
    int port;
    int max_associations;
    int max_pdu;
    int network_timeout_seconds;
    int artim_timeout_seconds;       /* for the A-ASSOCIATE-RQ after connecting; 10 when 0 */
    int max_associations_per_caller; /* running at once per calling AE; max_associations when 0 */
    int max_association_seconds;     /* an association is aborted after this long; 0: never */
    uint64_t max_dataset_bytes;      /* a larger data set (as received, or once inflated when
                                      * deflated) is refused; 0: no limit */
    const char *const *keywords;     /* attributes to read from each stored file */
    size_t n_keywords;
    dicom_admit_fn admit;            /* NULL admits every connection */
    dicom_associate_fn associate;
    dicom_store_begin_fn store_begin;       /* NULL: every data set is received */
    dicom_stored_fn stored;
    dicom_association_end_fn association_end; /* NULL: not told */
    dicom_association_ended_fn ended; /* NULL: not told (see dicom_association_report) */
    dicom_temp_path_fn temp_path;
    dicom_log_fn log;                /* level: 0 error, 1 warn, 2 info, 3 debug */
    void *ud;
    /* A TLS listener on a port of its own, besides the plain one: 0 none. */
    int tls_port;
    struct dicom_tls_config tls;     /* its certificate, key, CAs and client check */
};

struct dicom_server;

/* Loads the data dictionary, opens the listening socket. ERR gets the
 * reason on failure (e.g. port in use). */
DICOM_API int dicom_server_create(const struct dicom_server_config *cfg,
                                  struct dicom_server **out, char *err, size_t errlen);
/* Accepts connections until dicom_server_stop(); returns 0 after a stop.
 * Each connection negotiates its association on a thread of its own. */
DICOM_API int dicom_server_run(struct dicom_server *srv);
/* Stops accepting at once; associations in progress may finish for
 * GRACE_SECONDS, after which they are aborted (connections still
 * negotiating are closed at once). Thread-safe, returns at once. */
DICOM_API void dicom_server_stop(struct dicom_server *srv, int grace_seconds);
/* Number of associations currently running (negotiated ones). */
DICOM_API int dicom_server_active(struct dicom_server *srv);
DICOM_API void dicom_server_destroy(struct dicom_server *srv);

/* ---------------------------------------------------------------------
 * Sending (C-STORE SCU)
 */

/* What became of an association or of one file sent over it. */
enum dicom_send_outcome {
    DICOM_SEND_SENT = 0,     /* the peer kept it (success or warning status) */
    DICOM_SEND_TRANSIENT,    /* may work later: network error, timeout, busy peer, 0xA7xx */
    DICOM_SEND_PERMANENT,    /* will not work as it is: rejected permanently, no accepted
                              * presentation context, 0xA9xx, 0xCxxx, other failures */
};

/* One file to send and, after dicom_send(), what became of it. */
struct dicom_send_file {
    const char *path;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *transfer_syntax;   /* the file's; proposed as it is */
    enum dicom_send_outcome outcome; /* out */
    int answered;                  /* out: 1 when the peer answered the C-STORE (see status) */
    uint16_t status;               /* out: the C-STORE response status */
    char error[256];               /* out: why it was not sent (empty when sent) */
};

struct dicom_send_peer {
    const char *calling_ae;        /* ours */
    const char *called_ae;
    const char *host;
    int port;
    int timeout_seconds;           /* connect, ACSE and DIMSE */
    const struct dicom_tls_config *tls; /* NULL: plain TCP */
};

/* 1 when STATUS completes a C-STORE: success (0x0000) or a warning
 * (0x0001, 0xBxxx). */
DICOM_API int dicom_store_status_ok(uint16_t status);

/* The outcome a C-STORE response STATUS means. */
DICOM_API enum dicom_send_outcome dicom_store_status_outcome(uint16_t status);

/*
 * Sends FILES over one association to PEER, proposing each file's own SOP
 * class and transfer syntax. Every file's outcome and error are set. Returns
 * 0 when the association was established; else DICOM_ENETWORK (no
 * connection, timeout) or DICOM_EREFUSED (A-ASSOCIATE-RJ, transient or
 * permanent as the files' outcome says), with the reason in ERR and in
 * every file.
 * Over TLS, a peer certificate that PEER->tls's CAs do not trust (or one
 * that has expired) is DICOM_EREFUSED and permanent: it is a configuration
 * matter on one side or the other, which no retry mends. Other handshake
 * failures are DICOM_ENETWORK and transient.
 */
DICOM_API int dicom_send(const struct dicom_send_peer *peer, struct dicom_send_file *files,
                         size_t n, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
