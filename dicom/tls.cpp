// tls.cpp — DICOM TLS over dcmtls (OpenSSL): the transport layers of the
// TLS listener and of sending to a TLS destination.
//
// Both use the BCP 195 non-downgrading profile (TLS 1.2 or later, forward
// secrecy). The listener's layer also ends the socket hand-over early:
// dcmnet takes an accepted socket from the process-wide
// dcmExternalSocketHandle in receiveTransportConnectionTCP (dul.cc) and,
// on the same thread, calls the layer's createConnection() with it right
// before the handshake (serverSideHandshake). Overriding createConnection
// is thus the one place where the socket is known to be consumed and the
// handshake not yet begun: the hand-over variable is reset and its mutex
// released there, so that a peer that stalls its handshake holds only its
// own thread.

#include "dicom/internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmtls/tlscond.h"
#include "dcmtk/dcmtls/tlslayer.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <sys/socket.h>
#include <sys/time.h>

#include <string>

namespace ainode_dicom {

namespace {

// The caller's lock on the hand-over, between tls_handover_begin and
// tls_handover_end; whether dcmnet took the socket meanwhile.
thread_local std::unique_lock<std::mutex> *handover_lock = nullptr;
thread_local bool handover_consumed = false;
thread_local int handover_timeout = 0;

// The first certificate verification error of the handshake running on
// this thread (OpenSSL calls the verify callback on it).
thread_local std::string verify_error;
// A peer's alert refusing our certificate, as OpenSSL names it.
thread_local std::string peer_alert;
// What the last completed handshake on this thread agreed.
thread_local std::string session;

class HandoverTLSLayer : public DcmTLSTransportLayer {
public:
    explicit HandoverTLSLayer(T_ASC_NetworkRole role)
        : DcmTLSTransportLayer(role, nullptr, OFFalse)
    {
    }

    DcmTransportConnection *createConnection(DcmNativeSocketType sock, OFBool secure) override
    {
        if (handover_lock) {
            handover_consumed = true;
            if (handover_lock->owns_lock()) {
                dcmExternalSocketHandle.set(DCMNET_INVALID_SOCKET);
                handover_lock->unlock();
            }
        }
        DcmTransportConnection *c = DcmTLSTransportLayer::createConnection(sock, secure);
        // After the connection's constructor, which sets dcmnet's 60 s.
        if (c && handover_lock && handover_timeout > 0) {
            timeval tv = {handover_timeout, 0};
            setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        }
        return c;
    }
};

extern "C" int verify_callback(int ok, X509_STORE_CTX *ctx)
{
    if (!ok && verify_error.empty()) {
        int e = X509_STORE_CTX_get_error(ctx);
        verify_error = X509_verify_cert_error_string(e);
        X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
        if (cert) {
            char subject[256];
            X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
            verify_error += std::string(" (") + subject + ")";
        }
    }
    return ok;
}

void info_callback(const SSL *ssl, int where, int)
{
    if (!(where & SSL_CB_HANDSHAKE_DONE))
        return;
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    session = std::string(SSL_get_version(ssl)) + ", " +
              (cipher ? SSL_CIPHER_get_name(cipher) : "no cipher");
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (peer) {
        char subject[256];
        X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof subject);
        session += std::string(", peer ") + subject;
        X509_free(peer);
    } else {
        session += ", no peer certificate";
    }
}

int verify_mode(dicom_tls_verify v)
{
    switch (v) {
    case DICOM_TLS_VERIFY_REQUIRED: return SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    case DICOM_TLS_VERIFY_OPTIONAL: return SSL_VERIFY_PEER;
    case DICOM_TLS_VERIFY_OFF: return SSL_VERIFY_NONE;
    }
    return SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
}

// The OpenSSL reason codes by which a peer says it refused our certificate.
bool is_certificate_alert(int reason)
{
    switch (reason) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return true;
    default:
        return false;
    }
}

} // namespace

std::unique_ptr<DcmTransportLayer> tls_make_layer(T_ASC_NetworkRole role,
                                                  const dicom_tls_config &cfg, bool handover,
                                                  std::string &err)
{
    verify_error.clear();
    peer_alert.clear();
    ERR_clear_error();
    std::unique_ptr<DcmTLSTransportLayer> layer(
        handover ? new HandoverTLSLayer(role) : new DcmTLSTransportLayer(role, nullptr, OFFalse));
    if (!*layer) {
        err = "cannot create a TLS context";
        return nullptr;
    }
    OFCondition cond = layer->setTLSProfile(TSP_Profile_BCP195_ND);
    if (cond.good())
        cond = layer->activateCipherSuites();
    if (cond.bad()) {
        err = std::string("cannot set the BCP 195 TLS profile: ") + cond.text();
        return nullptr;
    }
    // Keys are read unattended: an encrypted one fails instead of asking
    // for a password on the terminal.
    layer->setPrivateKeyPasswd("");
    if (cfg.certificate) {
        cond = layer->setCertificateFile(cfg.certificate, DCF_Filetype_PEM);
        if (cond.bad()) {
            err = std::string("cannot load the certificate ") + cfg.certificate + ": " +
                  cond.text();
            return nullptr;
        }
        if (!cfg.private_key) {
            err = std::string("no private key for the certificate ") + cfg.certificate;
            return nullptr;
        }
        cond = layer->setPrivateKeyFile(cfg.private_key, DCF_Filetype_PEM);
        if (cond.bad()) {
            // An encrypted key fails here too (no password is given).
            err = std::string("cannot load the private key ") + cfg.private_key + ": " +
                  cond.text();
            return nullptr;
        }
        if (!layer->checkPrivateKeyMatchesCertificate()) {
            err = std::string("the private key ") + cfg.private_key +
                  " does not match the certificate " + cfg.certificate;
            return nullptr;
        }
    } else if (role == NET_ACCEPTOR) {
        err = "a TLS listener needs a certificate and its private key";
        return nullptr;
    }
    if (cfg.ca_certificates) {
        cond = layer->addTrustedCertificateFile(cfg.ca_certificates, DCF_Filetype_PEM);
        if (cond.bad()) {
            err = std::string("cannot load the CA certificates ") + cfg.ca_certificates + ": " +
                  cond.text();
            return nullptr;
        }
    } else if (cfg.verify != DICOM_TLS_VERIFY_OFF) {
        err = "verifying the peer's certificate needs CA certificates";
        return nullptr;
    }
    // dcmtls's own setCertificateVerification installs a callback that
    // says nothing; ours keeps the reason for the log and the outbox.
    SSL_CTX_set_verify(layer->getNativeHandle(), verify_mode(cfg.verify), verify_callback);
    SSL_CTX_set_info_callback(layer->getNativeHandle(), info_callback);
    return std::unique_ptr<DcmTransportLayer>(layer.release());
}

std::string tls_take_session()
{
    std::string s;
    s.swap(session);
    return s;
}

bool tls_peer_subject(T_ASC_Association *assoc, std::string &subject, std::string &cn)
{
    subject.clear();
    cn.clear();
    unsigned long len = ASC_getPeerCertificateLength(assoc);
    if (len == 0 || len > (1u << 20))
        return false;
    std::vector<unsigned char> der(len);
    if (ASC_getPeerCertificate(assoc, der.data(), len) != len)
        return false;
    const unsigned char *p = der.data();
    X509 *cert = d2i_X509(nullptr, &p, (long)len);
    if (!cert)
        return false;
    X509_NAME *name = X509_get_subject_name(cert);
    char buf[512];
    X509_NAME_oneline(name, buf, sizeof buf);
    subject = buf;
    int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (at >= 0) {
        const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
        unsigned char *utf8 = nullptr;
        int n = ASN1_STRING_to_UTF8(&utf8, v);
        if (n > 0)
            cn.assign((const char *)utf8, (size_t)n);
        OPENSSL_free(utf8);
    }
    X509_free(cert);
    return true;
}

void tls_handover_begin(std::unique_lock<std::mutex> *lock, int handshake_seconds)
{
    session.clear();
    handover_lock = lock;
    handover_timeout = handshake_seconds;
    handover_consumed = false;
    verify_error.clear();
}

bool tls_handover_end()
{
    handover_lock = nullptr;
    return handover_consumed;
}

tls_refusal tls_certificate_refusal(const OFCondition &cond)
{
    if (!verify_error.empty())
        return TLS_PEER_CERT_REFUSED;
    if (cond.module() == OFM_dcmtls && cond.code() >= DCMTLS_EC_SSL_Offset)
        return is_certificate_alert(cond.code() - DCMTLS_EC_SSL_Offset) ? TLS_OUR_CERT_REFUSED
                                                                         : TLS_NOT_REFUSED;
    // Under TLS 1.3 a server checks the client's certificate after the
    // client has finished its handshake: the refusal comes as an alert on
    // the first read or write, which dcmnet reports as a network error. The
    // alert is still in this thread's OpenSSL error queue.
    tls_refusal r = TLS_NOT_REFUSED;
    for (unsigned long e; (e = ERR_get_error()) != 0;) {
        if (r == TLS_NOT_REFUSED && ERR_GET_LIB(e) == ERR_LIB_SSL &&
            is_certificate_alert(ERR_GET_REASON(e))) {
            const char *why = ERR_reason_error_string(e);
            peer_alert = why ? why : "certificate refused";
            r = TLS_OUR_CERT_REFUSED;
        }
    }
    return r;
}

std::string tls_failure_text(const OFCondition &cond)
{
    std::string s = cond.text();
    if (cond == DCMTLS_EC_TLSReadOperationDidNotComplete ||
        cond == DCMTLS_EC_TLSWriteOperationDidNotComplete)
        s = "TLS handshake timed out";
    else if (cond == DCMTLS_EC_OpenSSLIOError)
        s = "connection closed during the TLS handshake";
    if (!verify_error.empty()) {
        s += ": " + verify_error;
        verify_error.clear();
    }
    if (!peer_alert.empty()) {
        s += " (the peer says: " + peer_alert + ")";
        peer_alert.clear();
    }
    ERR_clear_error();
    return s;
}

} // namespace ainode_dicom
