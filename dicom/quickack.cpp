// quickack.cpp — the transport of plain (non-TLS) associations the node
// accepts: DCMTK's TCP connection, with TCP_QUICKACK re-armed after each
// read.
//
// Most senders leave Nagle's algorithm on (DCMTK's tools unless
// TCP_NODELAY=1, dcmjs-dimse, many modalities). Such a sender holds back
// the last, partial segment of each message until the previous one is
// acknowledged, and Linux delays that acknowledgement by up to 40 ms once
// a connection looks interactive: one stall per C-STORE. Quick-ack mode
// acknowledges at once, but the kernel leaves it again by itself, so it is
// set anew after every read. The cost is one setsockopt per read and a few
// more pure ACK segments.

#include "dicom/internal.h"

#include <dcmtk/dcmnet/dcmtrans.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace ainode_dicom {

namespace {

class QuickAckConnection : public DcmTCPConnection {
public:
    explicit QuickAckConnection(DcmNativeSocketType fd) : DcmTCPConnection(fd), fd_(fd) {}

    ssize_t read(void *buf, size_t nbyte) override
    {
        ssize_t n = DcmTCPConnection::read(buf, nbyte);
        if (n > 0) {
            int one = 1;
            setsockopt(fd_, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        }
        return n;
    }

private:
    DcmNativeSocketType fd_;
};

class QuickAckLayer : public DcmTransportLayer {
public:
    DcmTransportConnection *createConnection(DcmNativeSocketType fd,
                                             OFBool useSecureLayer) override
    {
        if (useSecureLayer)
            return nullptr; // the TLS listener has a layer of its own
        return new QuickAckConnection(fd);
    }
};

} // namespace

std::unique_ptr<DcmTransportLayer> quickack_make_layer()
{
    return std::unique_ptr<DcmTransportLayer>(new QuickAckLayer());
}

} // namespace ainode_dicom
