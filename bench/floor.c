/* The floor: what no SFU can avoid per output packet, in C.
 *
 * Per output packet: copy a 1200-byte plain RTP packet into the send buffer, rewrite its
 * sequence number / SSRC, SRTP-protect it (RFC 7714 AEAD_AES_128_GCM or RFC 3711
 * AES_CM_128_HMAC_SHA1_80, OpenSSL EVP directly, keys scheduled once, HMAC inner/outer
 * states precomputed as any serious implementation does) and send it over loopback UDP to a
 * receiver process that only drains its socket. CPU time is the sender's alone
 * (CLOCK_PROCESS_CPUTIME_ID; the receiver is a separate process). Loopback delivery runs in
 * the sender's syscall, so the kernel part is charged to the sender, as it is to a server.
 *
 *   floor PROFILE [packets] [batch] [gso]   PROFILE: gcm | cm80 | none | gcm-nosend | cm80-nosend
 *   batch 1 = one sendto per packet, >1 = sendmmsg of that many datagrams (the server uses 64)
 *   gso G > 1 = within a batch, G consecutive datagrams go as one UDP GSO message (UDP_SEGMENT):
 *   the route past the per-datagram floor (a frame's packets to one viewer); default 1 = none
 *
 * Prints one JSON object.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PLAIN_LEN 1200 /* bytes of plain RTP, like browsers' default MTU budget */
#define HDR_LEN 12
#define MAX_BATCH 64
#define SLOT 1536

static double now_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static double now_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static void die(const char *what) { perror(what); exit(1); }

enum { P_NONE, P_GCM, P_CM80 };

static EVP_CIPHER_CTX *ctx;
static unsigned char salt[14];
static SHA_CTX hmac_inner, hmac_outer;

static void setup_keys(int profile) {
    unsigned char key[16], auth[20], pad[64];
    for (int i = 0; i < 16; i++) key[i] = (unsigned char)(i * 7 + 3);
    for (int i = 0; i < 14; i++) salt[i] = (unsigned char)(i * 13 + 1);
    for (int i = 0; i < 20; i++) auth[i] = (unsigned char)(i * 5 + 2);
    ctx = EVP_CIPHER_CTX_new();
    if (profile == P_GCM) {
        if (!EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, NULL, NULL)) die("gcm init");
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL);
        if (!EVP_EncryptInit_ex(ctx, NULL, NULL, key, NULL)) die("gcm key");
    } else if (profile == P_CM80) {
        if (!EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), NULL, key, NULL)) die("ctr init");
        memset(pad, 0x36, 64);
        for (int i = 0; i < 20; i++) pad[i] ^= auth[i];
        SHA1_Init(&hmac_inner);
        SHA1_Update(&hmac_inner, pad, 64);
        memset(pad, 0x5c, 64);
        for (int i = 0; i < 20; i++) pad[i] ^= auth[i];
        SHA1_Init(&hmac_outer);
        SHA1_Update(&hmac_outer, pad, 64);
    }
}

/* protect in place; returns the new length */
static int protect(int profile, unsigned char *p, int n, uint32_t ssrc, uint64_t index) {
    int outl = 0;
    if (profile == P_GCM) {
        /* RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt (12 bytes) */
        unsigned char iv[12] = {0};
        iv[2] = ssrc >> 24; iv[3] = ssrc >> 16; iv[4] = ssrc >> 8; iv[5] = ssrc;
        uint32_t roc = (uint32_t)(index >> 16);
        iv[6] = roc >> 24; iv[7] = roc >> 16; iv[8] = roc >> 8; iv[9] = roc;
        iv[10] = index >> 8; iv[11] = index;
        for (int i = 0; i < 12; i++) iv[i] ^= salt[i];
        if (!EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv)) return -1;
        if (!EVP_EncryptUpdate(ctx, NULL, &outl, p, HDR_LEN)) return -1;          /* AAD */
        if (!EVP_EncryptUpdate(ctx, p + HDR_LEN, &outl, p + HDR_LEN, n - HDR_LEN)) return -1;
        if (!EVP_EncryptFinal_ex(ctx, p + n, &outl)) return -1;
        if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, p + n)) return -1;
        return n + 16;
    }
    if (profile == P_CM80) {
        /* RFC 3711 §4.1.1: IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16) */
        unsigned char iv[16] = {0};
        memcpy(iv, salt, 14);
        iv[4] ^= ssrc >> 24; iv[5] ^= ssrc >> 16; iv[6] ^= ssrc >> 8; iv[7] ^= ssrc;
        for (int i = 0; i < 6; i++) iv[13 - i] ^= (unsigned char)(index >> (8 * i));
        if (!EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv)) return -1;
        if (!EVP_EncryptUpdate(ctx, p + HDR_LEN, &outl, p + HDR_LEN, n - HDR_LEN)) return -1;
        /* RFC 3711 §4.2: HMAC-SHA1 over packet || ROC, truncated to 80 bits */
        unsigned char roc[4], inner[20], tag[20];
        uint32_t r = (uint32_t)(index >> 16);
        roc[0] = r >> 24; roc[1] = r >> 16; roc[2] = r >> 8; roc[3] = r;
        SHA_CTX c = hmac_inner;
        SHA1_Update(&c, p, n);
        SHA1_Update(&c, roc, 4);
        SHA1_Final(inner, &c);
        c = hmac_outer;
        SHA1_Update(&c, inner, 20);
        SHA1_Final(tag, &c);
        memcpy(p + n, tag, 10);
        return n + 10;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s gcm|cm80|none|gcm-nosend|cm80-nosend [packets] [batch] [gso]\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    int send_it = strstr(name, "nosend") == NULL;
    int profile = strncmp(name, "gcm", 3) == 0 ? P_GCM : strncmp(name, "cm80", 4) == 0 ? P_CM80 : P_NONE;
    long packets = argc > 2 ? atol(argv[2]) : 1000000;
    int batch = argc > 3 ? atoi(argv[3]) : 1;
    if (batch < 1) batch = 1;
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    int gso = argc > 4 ? atoi(argv[4]) : 1;
    if (gso < 1) gso = 1;
    if (gso > 32) gso = 32;
    if (gso > 1 && batch % gso) batch -= batch % gso;   /* whole GSO messages per batch */
    if (batch < gso) batch = gso;
    setup_keys(profile);

    int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20;
    setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(rx, (struct sockaddr *)&dst, sizeof dst)) die("bind");
    socklen_t dl = sizeof dst;
    getsockname(rx, (struct sockaddr *)&dst, &dl);
    pid_t child = -1;
    if (send_it) {
        child = fork();
        if (child == 0) { /* the draining receiver */
            static unsigned char sink[2048];
            for (;;) if (recv(rx, sink, sizeof sink, 0) < 0 && errno != EINTR) _exit(0);
        }
    }
    close(rx);

    static unsigned char plain[PLAIN_LEN];
    static unsigned char out[MAX_BATCH][SLOT];
    memset(plain, 0x55, sizeof plain);
    plain[0] = 0x80; plain[1] = 96;
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < MAX_BATCH; i++) {
        iov[i].iov_base = out[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &dst;
        msgs[i].msg_hdr.msg_namelen = sizeof dst;
    }
    /* GSO messages: message m covers datagrams m*gso .. m*gso+gso-1 of the batch */
    struct mmsghdr gmsgs[MAX_BATCH];
    static unsigned char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(uint16_t))];
    memset(gmsgs, 0, sizeof gmsgs);
    for (int m = 0; gso > 1 && m < MAX_BATCH / gso; m++) {
        gmsgs[m].msg_hdr.msg_iov = &iov[m * gso];
        gmsgs[m].msg_hdr.msg_iovlen = gso;
        gmsgs[m].msg_hdr.msg_name = &dst;
        gmsgs[m].msg_hdr.msg_namelen = sizeof dst;
        gmsgs[m].msg_hdr.msg_control = ctrl[m];
        gmsgs[m].msg_hdr.msg_controllen = sizeof ctrl[m];
        struct cmsghdr *cm = CMSG_FIRSTHDR(&gmsgs[m].msg_hdr);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    }
    uint32_t ssrc = 0x12345678;
    long send_errors = 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double c0 = now_cpu(), w0 = now_wall();
    int pending = 0;
    for (long k = 0; k < packets; k++) {
        unsigned char *q = out[pending];
        memcpy(q, plain, PLAIN_LEN);                     /* the forwarder's copy into its out buffer */
        uint64_t index = (uint64_t)k;
        q[2] = index >> 8; q[3] = index;                 /* seq / SSRC rewrite */
        q[8] = ssrc >> 24; q[9] = ssrc >> 16; q[10] = ssrc >> 8; q[11] = ssrc;
        int len = protect(profile, q, PLAIN_LEN, ssrc, index);
        if (len < 0) die("protect");
        iov[pending].iov_len = len;
        pending++;
        if (pending == batch || k == packets - 1) {
            if (send_it) {
                if (batch == 1) {
                    if (sendto(tx, q, len, 0, (struct sockaddr *)&dst, sizeof dst) < 0) send_errors++;
                } else if (gso > 1 && pending == batch) {
                    int n = pending / gso, start = 0;
                    for (int m = 0; m < n; m++)
                        *(uint16_t *)CMSG_DATA(CMSG_FIRSTHDR(&gmsgs[m].msg_hdr)) = (uint16_t)iov[m * gso].iov_len;
                    while (start < n) {
                        int rc = sendmmsg(tx, gmsgs + start, n - start, 0);
                        if (rc < 0) { if (errno == EINTR) continue; send_errors += gso; start++; continue; }
                        start += rc;
                    }
                } else {
                    int start = 0;
                    while (start < pending) {
                        int rc = sendmmsg(tx, msgs + start, pending - start, 0);
                        if (rc < 0) { if (errno == EINTR) continue; send_errors++; start++; continue; }
                        start += rc;
                    }
                }
            }
            pending = 0;
        }
    }
    double c1 = now_cpu(), w1 = now_wall();
    getrusage(RUSAGE_SELF, &ru1);
    if (child > 0) { kill(child, SIGKILL); waitpid(child, NULL, 0); }
    double cpu = c1 - c0;
    double user = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
    double sys = (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("{\"mode\": \"%s\", \"packets\": %ld, \"batch\": %d, \"gso\": %d, \"plain_bytes\": %d, \"cpu_s\": %.4f, "
           "\"user_s\": %.4f, \"sys_s\": %.4f, \"wall_s\": %.4f, \"us_per_packet\": %.3f, "
           "\"packets_per_cpu_s\": %.0f, \"send_errors\": %ld, \"openssl\": \"%s\"}\n",
           name, packets, batch, gso, PLAIN_LEN, cpu, user, sys, w1 - w0, cpu / packets * 1e6, packets / cpu,
           send_errors, OpenSSL_version(OPENSSL_VERSION));
    return 0;
}
