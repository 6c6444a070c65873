# SRTP and SRTCP (RFC 3711, RFC 7714) directly on OpenSSL libcrypto.
#
# Included by _fastpath.pyx (`include "_srtp.pxi"`). Two DTLS-SRTP protection profiles:
#   SRTP_AES128_CM_SHA1_80  AES-128 counter mode + HMAC-SHA1, 80-bit tag  (RFC 3711, mandatory)
#   SRTP_AEAD_AES_128_GCM   AES-128-GCM, 128-bit tag                      (RFC 7714, preferred)
# No MKI, no encrypted header extensions, key_derivation_rate 0.
#
# Per-packet work never touches Python objects and never allocates: the cipher contexts are keyed
# once in __init__ and only get a new IV per packet; HMAC-SHA1 starts from SHA-1 states that have
# already absorbed the ipad/opad blocks (RFC 2104), copied by value per packet.
# Internal C names carry an `_srtp` prefix so they do not collide with the including module.

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize


cdef extern from "openssl/params.h" nogil:
    ctypedef struct OSSL_PARAM:
        pass
    OSSL_PARAM OSSL_PARAM_construct_octet_string(const char *key, void *buf, size_t bsize)
    OSSL_PARAM OSSL_PARAM_construct_end()

cdef extern from "openssl/core_names.h" nogil:
    const char *OSSL_CIPHER_PARAM_AEAD_TAG

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX
    ctypedef struct EVP_CIPHER
    ctypedef struct ENGINE
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    const EVP_CIPHER *EVP_aes_128_ctr()
    const EVP_CIPHER *EVP_aes_128_gcm()
    int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                          const unsigned char *key, const unsigned char *iv, int enc)
    int EVP_CipherUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                         const unsigned char *inp, int inl)
    int EVP_CipherFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    # OpenSSL >= 3.0. EVP_CipherInit_ex2 and the AEAD tag as a prebuilt OSSL_PARAM skip some of
    # the per-call work EVP_CipherInit_ex / EVP_CIPHER_CTX_ctrl(EVP_CTRL_AEAD_*_TAG) do.
    int EVP_CipherInit_ex2(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, const unsigned char *key,
                           const unsigned char *iv, int enc, const OSSL_PARAM *params)
    int EVP_CIPHER_CTX_get_params(EVP_CIPHER_CTX *ctx, OSSL_PARAM *params)
    int EVP_CIPHER_CTX_set_params(EVP_CIPHER_CTX *ctx, const OSSL_PARAM *params)

cdef extern from "openssl/sha.h" nogil:
    # Low-level SHA-1 (deprecated in OpenSSL 3 but present; the same asm block function EVP uses,
    # without EVP's per-call provider dispatch or the context duplication HMAC re-init costs).
    ctypedef struct SHA_CTX:
        pass
    int SHA1_Init(SHA_CTX *c)
    int SHA1_Update(SHA_CTX *c, const void *data, size_t length)
    int SHA1_Final(unsigned char *md, SHA_CTX *c)

cdef extern from "openssl/crypto.h" nogil:
    int CRYPTO_memcmp(const void *a, const void *b, size_t length)
    void OPENSSL_cleanse(void *ptr, size_t length)


# IANA DTLS-SRTP protection profile ids (RFC 5764 §4.1.2, RFC 7714 §14.2)
SRTP_AES128_CM_SHA1_80 = 0x0001
SRTP_AEAD_AES_128_GCM = 0x0007

# Return codes of the cdef paths (all negative; a non-negative return is a length)
SRTP_ERR_SHORT = -1      # too short / malformed header
SRTP_ERR_AUTH = -2       # authentication failed (tag mismatch)
SRTP_ERR_REPLAY = -3     # replayed or too old (RFC 3711 §3.3.2)
SRTP_ERR_CAPACITY = -4   # output would not fit `capacity`
SRTP_ERR_CRYPTO = -5     # OpenSSL call failed

cdef enum:
    _SRTP_SHORT = -1
    _SRTP_AUTH = -2
    _SRTP_REPLAY = -3
    _SRTP_CAPACITY = -4
    _SRTP_CRYPTO = -5
    _SRTP_CM80 = 0x0001
    _SRTP_GCM128 = 0x0007
    _SRTP_KEY_LEN = 16           # AES-128 for both profiles
    _SRTP_CM_SALT_LEN = 14       # RFC 3711 §8.2: 112-bit master and session salt
    _SRTP_GCM_SALT_LEN = 12      # RFC 7714 §11: 96-bit master and session salt
    _SRTP_AUTH_KEY_LEN = 20      # RFC 3711 §8.2: 160-bit HMAC-SHA1 session auth key
    _SRTP_CM_TAG_LEN = 10        # HMAC-SHA1-80
    _SRTP_GCM_TAG_LEN = 16       # RFC 7714 §14.2: 16-octet AEAD tag
    _SRTP_SRTCP_INDEX_LEN = 4    # E flag || 31-bit SRTCP index (RFC 3711 §3.4)
    _SRTP_SRTCP_INDEX_MASK = 0x7FFFFFFF
    _SRTP_SLOTS = 16             # per-SSRC state slots per table, least recently used replaced
    # Replay window in packets. RFC 3711 §3.3.2 asks for >= 64 and libsrtp defaults to 128, but
    # libwebrtc sets 1024 (srtp_session.cc: "tolerance for delays" of retransmissions) and so must
    # we: a publisher's same-SSRC retransmission (OBS answers NACKs so) arrives an RTT or more
    # after the original, i.e. hundreds of packets behind the highest index at a few Mbit/s, and a
    # 128-packet window refused it as a replay before the received bitmap could fill the hole.
    _SRTP_WINDOW = 1024
    _SRTP_WINDOW_WORDS = 16      # _SRTP_WINDOW / 64

SRTP_REPLAY_WINDOW = _SRTP_WINDOW

_SRTP_REASONS = {
    -1: "short",
    -2: "auth",
    -3: "replay",
    -4: "capacity",
    -5: "crypto",
}


class SrtpError(Exception):
    """An SRTP/SRTCP operation failed; `code` is an SRTP_ERR_* value, `reason` its short name."""

    def __init__(self, int code):
        self.code = code
        self.reason = _SRTP_REASONS.get(code, "unknown")
        super().__init__(f"SRTP {self.reason} ({code})")


def srtp_overhead(int profile):
    """Bytes SRTP adds to each RTP packet: the authentication tag (no MKI)."""
    if profile == _SRTP_CM80:
        return _SRTP_CM_TAG_LEN
    if profile == _SRTP_GCM128:
        return _SRTP_GCM_TAG_LEN
    raise ValueError(f"unsupported SRTP protection profile {profile:#06x}")


def srtp_key_lengths(int profile):
    """(master key length, master salt length) in bytes for a DTLS-SRTP protection profile."""
    if profile == _SRTP_CM80:
        return (_SRTP_KEY_LEN, _SRTP_CM_SALT_LEN)
    if profile == _SRTP_GCM128:
        return (_SRTP_KEY_LEN, _SRTP_GCM_SALT_LEN)
    raise ValueError(f"unsupported SRTP protection profile {profile:#06x}")


# Per-SSRC state. RTP: `highest` is the highest authenticated 48-bit packet index, which holds
# both the ROC (highest >> 16) and s_l (highest & 0xFFFF) of RFC 3711 Appendix A. RTCP: `highest`
# is the highest authenticated 31-bit SRTCP index.
ctypedef struct _SrtpSsrcState:
    uint32_t ssrc
    uint32_t used
    uint64_t tick            # last use, for least-recently-used replacement
    uint64_t highest
    # replay bitmap (receive tables only, allocated when the slot is first claimed: 128 bytes per
    # SSRC actually received), a ring over the last _SRTP_WINDOW indices: bit (i mod _SRTP_WINDOW)
    # set = index i seen, for highest - _SRTP_WINDOW < i <= highest
    uint64_t *window


cdef inline uint32_t _srtp_load32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


cdef inline void _srtp_store32(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef inline int _srtp_rtp_header_len(const unsigned char *buf, int length) noexcept nogil:
    """Length of the RTP header incl. CSRCs and extension (RFC 3550 §5.1, §5.3.1), or -1."""
    cdef int hl
    if length < 12 or (buf[0] >> 6) != 2:
        return -1
    hl = 12 + 4 * (buf[0] & 0x0F)
    if buf[0] & 0x10:
        if hl + 4 > length:
            return -1
        hl += 4 + 4 * ((<int>buf[hl + 2] << 8) | buf[hl + 3])
    if hl > length:
        return -1
    return hl


cdef inline uint64_t _srtp_estimate_index(uint64_t highest, uint32_t seq) noexcept nogil:
    """RFC 3711 §3.3.1 / Appendix A: the 48-bit index of `seq` given the highest index so far.

    A guess of ROC - 1 while ROC is 0 is impossible, so ROC 0 is used (as libsrtp does)."""
    cdef uint64_t roc = highest >> 16
    cdef uint32_t s_l = <uint32_t>(highest & 0xFFFF)
    cdef uint64_t v = roc
    if s_l < 32768:
        if seq > s_l + 32768 and roc > 0:
            v = roc - 1
    elif s_l - 32768 > seq:
        v = roc + 1
    return ((v << 16) | seq) & 0xFFFFFFFFFFFFULL


cdef inline uint64_t _srtp_bit(const _SrtpSsrcState *st, uint64_t index) noexcept nogil:
    cdef uint32_t i = <uint32_t>(index & (_SRTP_WINDOW - 1))
    return (st.window[i >> 6] >> (i & 63)) & 1


cdef inline void _srtp_set_bit(_SrtpSsrcState *st, uint64_t index, bint on) noexcept nogil:
    cdef uint32_t i = <uint32_t>(index & (_SRTP_WINDOW - 1))
    if on:
        st.window[i >> 6] |= (<uint64_t>1) << (i & 63)
    else:
        st.window[i >> 6] &= ~((<uint64_t>1) << (i & 63))


cdef inline bint _srtp_replayed(const _SrtpSsrcState *st, int64_t delta) noexcept nogil:
    """RFC 3711 §3.3.2: is an index `delta` away from the highest one too old or already seen?"""
    if delta > 0:
        return False
    if -delta >= _SRTP_WINDOW:
        return True
    return _srtp_bit(st, st.highest + <uint64_t>delta) != 0


cdef inline void _srtp_accept(_SrtpSsrcState *st, uint64_t index, int64_t delta) noexcept nogil:
    """Record an authenticated index in the replay window."""
    cdef uint64_t i
    if delta > 0:
        # a new slot comes with delta 1 and highest 0: the true distance is index - highest
        if index >= st.highest + _SRTP_WINDOW:
            memset(st.window, 0, _SRTP_WINDOW_WORDS * sizeof(uint64_t))
        else:
            i = st.highest + 1               # indices skipped over: not seen (yet)
            while i < index:
                _srtp_set_bit(st, i, False)
                i += 1
        st.highest = index
    _srtp_set_bit(st, index, True)


cdef inline int _srtp_find(_SrtpSsrcState *table, uint32_t ssrc) noexcept nogil:
    cdef int i
    for i in range(_SRTP_SLOTS):
        if table[i].used and table[i].ssrc == ssrc:
            return i
    return -1


cdef inline int _srtp_claim(_SrtpSsrcState *table, uint32_t ssrc, bint rx) noexcept nogil:
    """A slot for a new SSRC: a free one, else the least recently used (its state is lost).
    `rx`: a receive table, whose slots need a replay window (-1 when it cannot be allocated)."""
    cdef int i
    cdef int victim = 0
    for i in range(_SRTP_SLOTS):
        if not table[i].used:
            victim = i
            break
        if table[i].tick < table[victim].tick:
            victim = i
    if rx:
        if table[victim].window == NULL:
            table[victim].window = <uint64_t *>malloc(_SRTP_WINDOW_WORDS * sizeof(uint64_t))
            if table[victim].window == NULL:
                return -1
        memset(table[victim].window, 0, _SRTP_WINDOW_WORDS * sizeof(uint64_t))
    table[victim].used = 1
    table[victim].ssrc = ssrc
    table[victim].highest = 0
    return victim


cdef inline int _srtp_gcm_tag(EVP_CIPHER_CTX *ctx, unsigned char *tag, bint get) noexcept nogil:
    """Read (after encrypting) or set (before EVP_CipherFinal_ex when decrypting) the GCM tag."""
    cdef OSSL_PARAM params[2]
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag,
                                                  _SRTP_GCM_TAG_LEN)
    params[1] = OSSL_PARAM_construct_end()
    if get:
        return EVP_CIPHER_CTX_get_params(ctx, params)
    return EVP_CIPHER_CTX_set_params(ctx, params)


cdef inline void _srtp_hmac_sha1(const SHA_CTX *inner, const SHA_CTX *outer,
                                 const unsigned char *a, size_t a_len,
                                 const unsigned char *b, size_t b_len,
                                 unsigned char *mac) noexcept nogil:
    """HMAC-SHA1 (RFC 2104) of a || b from precomputed ipad/opad states; 20 bytes to `mac`."""
    cdef SHA_CTX c
    cdef unsigned char inner_digest[20]
    memcpy(&c, inner, sizeof(SHA_CTX))
    SHA1_Update(&c, a, a_len)
    if b_len:
        SHA1_Update(&c, b, b_len)
    SHA1_Final(inner_digest, &c)
    memcpy(&c, outer, sizeof(SHA_CTX))
    SHA1_Update(&c, inner_digest, 20)
    SHA1_Final(mac, &c)


cdef int _srtp_kdf(const unsigned char *master_key, const unsigned char *master_salt,
                   int salt_len, int label, unsigned char *out, int out_len) noexcept nogil:
    """AES-CM PRF key derivation, RFC 3711 §4.3.1 and §4.3.3, key_derivation_rate 0.

    x = (label << 48) XOR master_salt, IV = x * 2^16. A 96-bit GCM master salt is zero-padded to
    112 bits on the right (RFC 7714 §11; libsrtp does the same). Returns 0 or SRTP_ERR_CRYPTO."""
    cdef unsigned char iv[16]
    cdef int n = 0
    cdef int ok
    cdef EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL:
        return _SRTP_CRYPTO
    memset(iv, 0, 16)
    memcpy(iv, master_salt, salt_len)
    iv[7] ^= <unsigned char>label
    memset(out, 0, out_len)
    ok = (EVP_CipherInit_ex(ctx, EVP_aes_128_ctr(), NULL, master_key, iv, 1) == 1
          and EVP_CipherUpdate(ctx, out, &n, out, out_len) == 1)
    EVP_CIPHER_CTX_free(ctx)
    OPENSSL_cleanse(iv, 16)
    return 0 if ok else _SRTP_CRYPTO


cdef class SrtpContext:
    """SRTP + SRTCP for one direction of one DTLS-SRTP association (RFC 3711, RFC 7714).

    Driven by: packets handed to protect_rtp / protect_rtcp (outbound context) or unprotect_rtp /
    unprotect_rtcp (inbound context), all in place on caller-owned buffers; the Python wrappers do
    the same on copies. The caller supplies the 48-bit packet index on protect (the forwarder has
    extended sequence numbers); unprotect estimates it per SSRC (RFC 3711 Appendix A).
    Outputs: new lengths, or an SRTP_ERR_* code; counters `protected`, `unprotected`,
    `auth_failures`, `replays` (RTP and RTCP together).

    State: keyed cipher contexts for RTP and RTCP, per-SSRC tables of _SRTP_SLOTS slots (RTP receive,
    RTCP receive, RTP send for the `protect` wrapper), least recently used replaced (a replaced
    SSRC restarts at ROC 0), and a per-context SRTCP send index starting at 1 (as libsrtp's).
    The cdef methods need no GIL but are not thread-safe: one thread per context at a time.
    With GCM, unprotect decrypts in place before the tag is checked: on SRTP_ERR_AUTH the payload
    bytes are garbage (the packet is to be dropped anyway).
    """

    cdef EVP_CIPHER_CTX *_rtp_cipher
    cdef EVP_CIPHER_CTX *_rtcp_cipher
    cdef SHA_CTX _rtp_inner
    cdef SHA_CTX _rtp_outer
    cdef SHA_CTX _rtcp_inner
    cdef SHA_CTX _rtcp_outer
    cdef unsigned char _rtp_salt[_SRTP_CM_SALT_LEN]
    cdef unsigned char _rtcp_salt[_SRTP_CM_SALT_LEN]
    cdef bint _aead
    cdef int _tag_len
    cdef int _salt_len
    cdef uint32_t _srtcp_index
    cdef uint64_t _tick
    cdef _SrtpSsrcState _rx_rtp[_SRTP_SLOTS]
    cdef _SrtpSsrcState _rx_rtcp[_SRTP_SLOTS]
    cdef _SrtpSsrcState _tx_rtp[_SRTP_SLOTS]
    cdef readonly int profile
    cdef readonly unsigned long long protected
    cdef readonly unsigned long long unprotected
    cdef readonly unsigned long long auth_failures
    cdef readonly unsigned long long replays

    def __cinit__(self, *args, **kwargs):
        self._rtp_cipher = EVP_CIPHER_CTX_new()
        self._rtcp_cipher = EVP_CIPHER_CTX_new()
        if self._rtp_cipher == NULL or self._rtcp_cipher == NULL:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        memset(self._rx_rtp, 0, sizeof(self._rx_rtp))
        memset(self._rx_rtcp, 0, sizeof(self._rx_rtcp))
        memset(self._tx_rtp, 0, sizeof(self._tx_rtp))
        self._srtcp_index = 1    # libsrtp's first SRTCP index too

    def __dealloc__(self):
        cdef int i
        for i in range(_SRTP_SLOTS):
            free(self._rx_rtp[i].window)
            free(self._rx_rtcp[i].window)
        if self._rtp_cipher != NULL:
            EVP_CIPHER_CTX_free(self._rtp_cipher)
        if self._rtcp_cipher != NULL:
            EVP_CIPHER_CTX_free(self._rtcp_cipher)
        OPENSSL_cleanse(&self._rtp_inner, sizeof(SHA_CTX))
        OPENSSL_cleanse(&self._rtp_outer, sizeof(SHA_CTX))
        OPENSSL_cleanse(&self._rtcp_inner, sizeof(SHA_CTX))
        OPENSSL_cleanse(&self._rtcp_outer, sizeof(SHA_CTX))
        OPENSSL_cleanse(self._rtp_salt, _SRTP_CM_SALT_LEN)
        OPENSSL_cleanse(self._rtcp_salt, _SRTP_CM_SALT_LEN)

    def __init__(self, int profile, bytes master_key, bytes master_salt):
        cdef unsigned char keys[6][_SRTP_AUTH_KEY_LEN]
        cdef int label
        cdef int salt_len
        if profile == _SRTP_CM80:
            salt_len = _SRTP_CM_SALT_LEN
        elif profile == _SRTP_GCM128:
            salt_len = _SRTP_GCM_SALT_LEN
        else:
            raise ValueError(f"unsupported SRTP protection profile {profile:#06x}")
        if master_key is None or len(master_key) != _SRTP_KEY_LEN:
            raise ValueError(f"master key must be {_SRTP_KEY_LEN} bytes")
        if master_salt is None or len(master_salt) != salt_len:
            raise ValueError(f"master salt must be {salt_len} bytes for profile {profile:#06x}")
        self.profile = profile
        self._aead = profile == _SRTP_GCM128
        self._tag_len = _SRTP_GCM_TAG_LEN if self._aead else _SRTP_CM_TAG_LEN
        self._salt_len = salt_len
        # RFC 3711 §4.3.1 labels: 0 RTP enc, 1 RTP auth, 2 RTP salt, 3 RTCP enc, 4 RTCP auth,
        # 5 RTCP salt. Lengths: key 16, auth 20, salt = master salt length.
        for label in range(6):
            if _srtp_kdf(master_key, master_salt, salt_len, label, keys[label],
                         (_SRTP_KEY_LEN, _SRTP_AUTH_KEY_LEN, salt_len)[label % 3]) < 0:
                OPENSSL_cleanse(keys, sizeof(keys))
                raise SrtpError(_SRTP_CRYPTO)
        try:
            self._key(False, keys[0], keys[2], keys[1])
            self._key(True, keys[3], keys[5], keys[4])
        finally:
            OPENSSL_cleanse(keys, sizeof(keys))

    cdef int _key(self, bint rtcp, const unsigned char *key, const unsigned char *salt,
                  const unsigned char *auth_key) except -1:
        """Install session keys for RTP or RTCP: key the cipher, copy the salt, HMAC pads."""
        cdef EVP_CIPHER_CTX *ctx = self._rtcp_cipher if rtcp else self._rtp_cipher
        cdef const EVP_CIPHER *cipher = EVP_aes_128_gcm() if self._aead else EVP_aes_128_ctr()
        cdef unsigned char pad[64]
        cdef SHA_CTX *inner = &self._rtcp_inner if rtcp else &self._rtp_inner
        cdef SHA_CTX *outer = &self._rtcp_outer if rtcp else &self._rtp_outer
        cdef int i
        if EVP_CipherInit_ex(ctx, cipher, NULL, key, NULL, 1) != 1:
            raise SrtpError(_SRTP_CRYPTO)
        memcpy(&self._rtcp_salt[0] if rtcp else &self._rtp_salt[0], salt, self._salt_len)
        if not self._aead:
            memset(pad, 0x36, 64)
            for i in range(_SRTP_AUTH_KEY_LEN):
                pad[i] ^= auth_key[i]
            SHA1_Init(inner)
            SHA1_Update(inner, pad, 64)
            memset(pad, 0x5c, 64)
            for i in range(_SRTP_AUTH_KEY_LEN):
                pad[i] ^= auth_key[i]
            SHA1_Init(outer)
            SHA1_Update(outer, pad, 64)
            OPENSSL_cleanse(pad, 64)
        return 0

    def _set_session_keys(self, bint rtcp, bytes key, bytes salt, bytes auth_key=None):
        """Test hook: install session keys directly (the RFC 7714 §16 vectors skip the KDF)."""
        if len(key) != _SRTP_KEY_LEN or len(salt) != self._salt_len:
            raise ValueError("bad session key or salt length")
        if not self._aead and (auth_key is None or len(auth_key) != _SRTP_AUTH_KEY_LEN):
            raise ValueError("AES-CM needs a 20-byte session auth key")
        self._key(rtcp, key, salt, auth_key if auth_key is not None else b"\0" * 20)

    def _set_srtcp_index(self, unsigned int index):
        """Test hook: the SRTCP index the next protect_rtcp uses."""
        self._srtcp_index = index & _SRTP_SRTCP_INDEX_MASK

    # ---- RTP ---------------------------------------------------------------------------------

    cdef int protect_rtp(self, unsigned char *buf, int length, int capacity,
                         unsigned long long index) noexcept nogil:
        """RFC 3711 §3.3 / RFC 7714 §8: encrypt the payload and append the tag, in place.

        `index` is the 48-bit packet index; its ROC (index >> 16) is used with the sequence
        number from the header. Returns the new length or an SRTP_ERR_* code."""
        cdef int hl = _srtp_rtp_header_len(buf, length)
        cdef unsigned char iv[16]
        cdef unsigned char mac[20]
        cdef unsigned char roc_be[4]
        cdef int n = 0
        cdef int i
        cdef uint32_t roc, ssrc, seq
        if hl < 0:
            return _SRTP_SHORT
        if capacity - length < self._tag_len:
            return _SRTP_CAPACITY
        ssrc = _srtp_load32(buf + 8)
        seq = (<uint32_t>buf[2] << 8) | buf[3]
        roc = <uint32_t>(index >> 16)
        if self._aead:
            # RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt; AAD = header (§8.2)
            iv[0] = 0
            iv[1] = 0
            _srtp_store32(iv + 2, ssrc)
            _srtp_store32(iv + 6, roc)
            iv[10] = <unsigned char>(seq >> 8)
            iv[11] = <unsigned char>seq
            for i in range(_SRTP_GCM_SALT_LEN):
                iv[i] ^= self._rtp_salt[i]
            if (EVP_CipherInit_ex2(self._rtp_cipher, NULL, NULL, iv, 1, NULL) != 1
                    or EVP_CipherUpdate(self._rtp_cipher, NULL, &n, buf, hl) != 1):
                return _SRTP_CRYPTO
            if length > hl and EVP_CipherUpdate(self._rtp_cipher, buf + hl, &n, buf + hl,
                                                length - hl) != 1:
                return _SRTP_CRYPTO
            if (EVP_CipherFinal_ex(self._rtp_cipher, mac, &n) != 1
                    or _srtp_gcm_tag(self._rtp_cipher, buf + length, True) != 1):
                return _SRTP_CRYPTO
        else:
            # RFC 3711 §4.1.1: IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16)
            memcpy(iv, self._rtp_salt, _SRTP_CM_SALT_LEN)
            iv[14] = 0
            iv[15] = 0
            iv[4] ^= <unsigned char>(ssrc >> 24)
            iv[5] ^= <unsigned char>(ssrc >> 16)
            iv[6] ^= <unsigned char>(ssrc >> 8)
            iv[7] ^= <unsigned char>ssrc
            iv[8] ^= <unsigned char>(roc >> 24)
            iv[9] ^= <unsigned char>(roc >> 16)
            iv[10] ^= <unsigned char>(roc >> 8)
            iv[11] ^= <unsigned char>roc
            iv[12] ^= <unsigned char>(seq >> 8)
            iv[13] ^= <unsigned char>seq
            if EVP_CipherInit_ex2(self._rtp_cipher, NULL, NULL, iv, 1, NULL) != 1:
                return _SRTP_CRYPTO
            if length > hl and EVP_CipherUpdate(self._rtp_cipher, buf + hl, &n, buf + hl,
                                                length - hl) != 1:
                return _SRTP_CRYPTO
            # RFC 3711 §4.2: tag = HMAC-SHA1(auth key, authenticated portion || ROC), 80 bits
            _srtp_store32(roc_be, roc)
            _srtp_hmac_sha1(&self._rtp_inner, &self._rtp_outer, buf, length, roc_be, 4, mac)
            memcpy(buf + length, mac, _SRTP_CM_TAG_LEN)
        self.protected += 1
        return length + self._tag_len

    cdef int unprotect_rtp(self, unsigned char *buf, int length,
                           unsigned long long *index_out) noexcept nogil:
        """RFC 3711 §3.3 / RFC 7714 §8: check replay and tag, decrypt, strip the tag, in place.

        On success writes the 48-bit packet index to *index_out and returns the new length."""
        cdef int plen = length - self._tag_len
        cdef int hl
        cdef int slot
        cdef int n = 0
        cdef int i
        cdef uint32_t ssrc, seq, roc
        cdef uint64_t index
        cdef int64_t delta = 1
        cdef unsigned char iv[16]
        cdef unsigned char mac[20]
        cdef unsigned char roc_be[4]
        if plen < 12:
            return _SRTP_SHORT
        hl = _srtp_rtp_header_len(buf, plen)
        if hl < 0:
            return _SRTP_SHORT
        ssrc = _srtp_load32(buf + 8)
        seq = (<uint32_t>buf[2] << 8) | buf[3]
        slot = _srtp_find(self._rx_rtp, ssrc)
        if slot >= 0:
            index = _srtp_estimate_index(self._rx_rtp[slot].highest, seq)
            delta = <int64_t>index - <int64_t>self._rx_rtp[slot].highest
            if _srtp_replayed(&self._rx_rtp[slot], delta):
                self.replays += 1
                return _SRTP_REPLAY
        else:
            index = seq      # first packet of an SSRC: ROC 0
        roc = <uint32_t>(index >> 16)
        if self._aead:
            iv[0] = 0
            iv[1] = 0
            _srtp_store32(iv + 2, ssrc)
            _srtp_store32(iv + 6, roc)
            iv[10] = <unsigned char>(seq >> 8)
            iv[11] = <unsigned char>seq
            for i in range(_SRTP_GCM_SALT_LEN):
                iv[i] ^= self._rtp_salt[i]
            if (EVP_CipherInit_ex2(self._rtp_cipher, NULL, NULL, iv, 0, NULL) != 1
                    or EVP_CipherUpdate(self._rtp_cipher, NULL, &n, buf, hl) != 1):
                return _SRTP_CRYPTO
            if plen > hl and EVP_CipherUpdate(self._rtp_cipher, buf + hl, &n, buf + hl,
                                              plen - hl) != 1:
                return _SRTP_CRYPTO
            if _srtp_gcm_tag(self._rtp_cipher, buf + plen, False) != 1:
                return _SRTP_CRYPTO
            if EVP_CipherFinal_ex(self._rtp_cipher, mac, &n) != 1:
                self.auth_failures += 1
                return _SRTP_AUTH
        else:
            _srtp_store32(roc_be, roc)
            _srtp_hmac_sha1(&self._rtp_inner, &self._rtp_outer, buf, plen, roc_be, 4, mac)
            if CRYPTO_memcmp(mac, buf + plen, _SRTP_CM_TAG_LEN) != 0:
                self.auth_failures += 1
                return _SRTP_AUTH
            memcpy(iv, self._rtp_salt, _SRTP_CM_SALT_LEN)
            iv[14] = 0
            iv[15] = 0
            iv[4] ^= <unsigned char>(ssrc >> 24)
            iv[5] ^= <unsigned char>(ssrc >> 16)
            iv[6] ^= <unsigned char>(ssrc >> 8)
            iv[7] ^= <unsigned char>ssrc
            iv[8] ^= <unsigned char>(roc >> 24)
            iv[9] ^= <unsigned char>(roc >> 16)
            iv[10] ^= <unsigned char>(roc >> 8)
            iv[11] ^= <unsigned char>roc
            iv[12] ^= <unsigned char>(seq >> 8)
            iv[13] ^= <unsigned char>seq
            if EVP_CipherInit_ex2(self._rtp_cipher, NULL, NULL, iv, 1, NULL) != 1:
                return _SRTP_CRYPTO
            if plen > hl and EVP_CipherUpdate(self._rtp_cipher, buf + hl, &n, buf + hl,
                                              plen - hl) != 1:
                return _SRTP_CRYPTO
        # Authenticated: only now does the packet move the replay window (RFC 3711 §3.3.2)
        if slot < 0:
            slot = _srtp_claim(self._rx_rtp, ssrc, True)
            if slot < 0:
                return _SRTP_CRYPTO      # no memory for its replay window
        _srtp_accept(&self._rx_rtp[slot], index, delta)
        self._tick += 1
        self._rx_rtp[slot].tick = self._tick
        index_out[0] = index
        self.unprotected += 1
        return plen

    # ---- RTCP --------------------------------------------------------------------------------

    cdef inline void _rtcp_iv(self, unsigned char *iv, uint32_t ssrc,
                              uint32_t index) noexcept nogil:
        cdef int i
        if self._aead:
            # RFC 7714 §9.1: IV = (0x0000 || SSRC || 0x0000 || 0 || SRTCP index) XOR salt
            memset(iv, 0, 12)
            _srtp_store32(iv + 2, ssrc)
            _srtp_store32(iv + 8, index)
            for i in range(_SRTP_GCM_SALT_LEN):
                iv[i] ^= self._rtcp_salt[i]
        else:
            # RFC 3711 §4.1.1 with the SRTCP index in place of the packet index
            memcpy(iv, self._rtcp_salt, _SRTP_CM_SALT_LEN)
            iv[14] = 0
            iv[15] = 0
            iv[4] ^= <unsigned char>(ssrc >> 24)
            iv[5] ^= <unsigned char>(ssrc >> 16)
            iv[6] ^= <unsigned char>(ssrc >> 8)
            iv[7] ^= <unsigned char>ssrc
            iv[10] ^= <unsigned char>(index >> 24)
            iv[11] ^= <unsigned char>(index >> 16)
            iv[12] ^= <unsigned char>(index >> 8)
            iv[13] ^= <unsigned char>index

    cdef int protect_rtcp(self, unsigned char *buf, int length, int capacity) noexcept nogil:
        """RFC 3711 §3.4 / RFC 7714 §9: encrypt (E=1) and append index and tag, in place.

        Layout: CM  header(8) || encrypted || E|index(4) || tag(10)
                GCM header(8) || encrypted || tag(16) || E|index(4)
        The 31-bit SRTCP index is one counter per context; it wraps after 2^31 packets (a
        receiver's replay window would then reject them: re-key before that)."""
        cdef unsigned char iv[16]
        cdef unsigned char eidx[4]
        cdef unsigned char mac[20]
        cdef uint32_t ssrc, index
        cdef int n = 0
        if length < 8 or (buf[0] >> 6) != 2:
            return _SRTP_SHORT
        if capacity - length < _SRTP_SRTCP_INDEX_LEN + self._tag_len:
            return _SRTP_CAPACITY
        ssrc = _srtp_load32(buf + 4)
        index = self._srtcp_index
        _srtp_store32(eidx, 0x80000000U | index)
        self._rtcp_iv(iv, ssrc, index)
        if self._aead:
            # RFC 7714 §9.2: AAD = header and sender SSRC (8 octets) || E || SRTCP index
            if (EVP_CipherInit_ex2(self._rtcp_cipher, NULL, NULL, iv, 1, NULL) != 1
                    or EVP_CipherUpdate(self._rtcp_cipher, NULL, &n, buf, 8) != 1
                    or EVP_CipherUpdate(self._rtcp_cipher, NULL, &n, eidx, 4) != 1):
                return _SRTP_CRYPTO
            if length > 8 and EVP_CipherUpdate(self._rtcp_cipher, buf + 8, &n, buf + 8,
                                               length - 8) != 1:
                return _SRTP_CRYPTO
            if (EVP_CipherFinal_ex(self._rtcp_cipher, mac, &n) != 1
                    or _srtp_gcm_tag(self._rtcp_cipher, buf + length, True) != 1):
                return _SRTP_CRYPTO
            memcpy(buf + length + _SRTP_GCM_TAG_LEN, eidx, 4)
        else:
            if EVP_CipherInit_ex2(self._rtcp_cipher, NULL, NULL, iv, 1, NULL) != 1:
                return _SRTP_CRYPTO
            if length > 8 and EVP_CipherUpdate(self._rtcp_cipher, buf + 8, &n, buf + 8,
                                               length - 8) != 1:
                return _SRTP_CRYPTO
            memcpy(buf + length, eidx, 4)
            # RFC 3711 §3.4: the tag covers header, encrypted part and E || SRTCP index
            _srtp_hmac_sha1(&self._rtcp_inner, &self._rtcp_outer, buf, length + 4, NULL, 0, mac)
            memcpy(buf + length + 4, mac, _SRTP_CM_TAG_LEN)
        self._srtcp_index = (index + 1) & _SRTP_SRTCP_INDEX_MASK
        self.protected += 1
        return length + _SRTP_SRTCP_INDEX_LEN + self._tag_len

    cdef int unprotect_rtcp(self, unsigned char *buf, int length) noexcept nogil:
        """RFC 3711 §3.4 / RFC 7714 §9: check tag and replay per sender SSRC, decrypt if E=1.

        Returns the length of the plain compound RTCP packet or an SRTP_ERR_* code."""
        cdef int end                 # end of the (encrypted) RTCP packet
        cdef const unsigned char *eidx
        cdef const unsigned char *tag
        cdef unsigned char iv[16]
        cdef unsigned char mac[20]
        cdef uint32_t ssrc, word, index
        cdef bint encrypted
        cdef int slot
        cdef int n = 0
        cdef int64_t delta = 1
        end = length - _SRTP_SRTCP_INDEX_LEN - self._tag_len
        if end < 8 or (buf[0] >> 6) != 2:
            return _SRTP_SHORT
        if self._aead:
            tag = buf + end
            eidx = buf + end + _SRTP_GCM_TAG_LEN
        else:
            eidx = buf + end
            tag = buf + end + 4
        word = _srtp_load32(eidx)
        encrypted = word >> 31
        index = word & _SRTP_SRTCP_INDEX_MASK
        ssrc = _srtp_load32(buf + 4)
        slot = _srtp_find(self._rx_rtcp, ssrc)
        if slot >= 0:
            delta = <int64_t>index - <int64_t>self._rx_rtcp[slot].highest
            if _srtp_replayed(&self._rx_rtcp[slot], delta):
                self.replays += 1
                return _SRTP_REPLAY
        self._rtcp_iv(iv, ssrc, index)
        if self._aead:
            if EVP_CipherInit_ex2(self._rtcp_cipher, NULL, NULL, iv, 0, NULL) != 1:
                return _SRTP_CRYPTO
            if encrypted:
                if (EVP_CipherUpdate(self._rtcp_cipher, NULL, &n, buf, 8) != 1
                        or EVP_CipherUpdate(self._rtcp_cipher, NULL, &n, eidx, 4) != 1):
                    return _SRTP_CRYPTO
                if end > 8 and EVP_CipherUpdate(self._rtcp_cipher, buf + 8, &n, buf + 8,
                                                end - 8) != 1:
                    return _SRTP_CRYPTO
            else:
                # RFC 7714 §9.2 (E=0): the whole RTCP packet and E || index are AAD
                if (EVP_CipherUpdate(self._rtcp_cipher, NULL, &n, buf, end) != 1
                        or EVP_CipherUpdate(self._rtcp_cipher, NULL, &n, eidx, 4) != 1):
                    return _SRTP_CRYPTO
            if _srtp_gcm_tag(self._rtcp_cipher, <unsigned char *>tag, False) != 1:
                return _SRTP_CRYPTO
            if EVP_CipherFinal_ex(self._rtcp_cipher, mac, &n) != 1:
                self.auth_failures += 1
                return _SRTP_AUTH
        else:
            _srtp_hmac_sha1(&self._rtcp_inner, &self._rtcp_outer, buf, end + 4, NULL, 0, mac)
            if CRYPTO_memcmp(mac, tag, _SRTP_CM_TAG_LEN) != 0:
                self.auth_failures += 1
                return _SRTP_AUTH
            if encrypted:
                if EVP_CipherInit_ex2(self._rtcp_cipher, NULL, NULL, iv, 1, NULL) != 1:
                    return _SRTP_CRYPTO
                if end > 8 and EVP_CipherUpdate(self._rtcp_cipher, buf + 8, &n, buf + 8,
                                                end - 8) != 1:
                    return _SRTP_CRYPTO
        if slot < 0:
            slot = _srtp_claim(self._rx_rtcp, ssrc, True)
            if slot < 0:
                return _SRTP_CRYPTO      # no memory for its replay window
            self._rx_rtcp[slot].highest = index
        _srtp_accept(&self._rx_rtcp[slot], index, delta)
        self._tick += 1
        self._rx_rtcp[slot].tick = self._tick
        self.unprotected += 1
        return end

    # ---- Python wrappers (slow path, tests) ------------------------------------------------

    cdef uint64_t _tx_index(self, const unsigned char *buf, bint commit) noexcept:
        """The packet index for an outbound RTP packet from the send table (ROC per SSRC)."""
        cdef uint32_t ssrc = _srtp_load32(buf + 8)
        cdef uint32_t seq = (<uint32_t>buf[2] << 8) | buf[3]
        cdef int slot = _srtp_find(self._tx_rtp, ssrc)
        cdef uint64_t index
        if slot < 0:
            index = seq
            if commit:
                slot = _srtp_claim(self._tx_rtp, ssrc, False)
                self._tx_rtp[slot].highest = index
        else:
            index = _srtp_estimate_index(self._tx_rtp[slot].highest, seq)
            if commit and index > self._tx_rtp[slot].highest:
                self._tx_rtp[slot].highest = index
        if commit:
            self._tick += 1
            self._tx_rtp[slot].tick = self._tick
        return index

    def protect(self, bytes packet):
        """Protect one RTP packet; the ROC is tracked per SSRC from the sequence numbers seen."""
        cdef int length = len(packet)
        cdef bytearray out = bytearray(length + _SRTP_GCM_TAG_LEN)
        cdef unsigned char *p = out
        cdef int r
        cdef uint64_t index
        memcpy(p, <const unsigned char *>packet, length)
        if _srtp_rtp_header_len(p, length) < 0:
            raise SrtpError(_SRTP_SHORT)
        index = self._tx_index(p, False)
        r = self.protect_rtp(p, length, length + _SRTP_GCM_TAG_LEN, index)
        if r < 0:
            raise SrtpError(r)
        self._tx_index(p, True)
        return PyBytes_FromStringAndSize(<char *>p, r)

    def _protect_with_index(self, bytes packet, unsigned long long index):
        """Test hook: protect_rtp with an explicit 48-bit index (no send-table update)."""
        cdef int length = len(packet)
        cdef bytearray out = bytearray(length + _SRTP_GCM_TAG_LEN)
        cdef unsigned char *p = out
        cdef int r
        memcpy(p, <const unsigned char *>packet, length)
        r = self.protect_rtp(p, length, length + _SRTP_GCM_TAG_LEN, index)
        if r < 0:
            raise SrtpError(r)
        return PyBytes_FromStringAndSize(<char *>p, r)

    def _protect_into(self, bytearray buf, int length, unsigned long long index=0,
                      bint rtcp=False):
        """Test hook: protect_rtp / protect_rtcp in place in `buf` (capacity len(buf)); returns
        the raw return code."""
        if length > len(buf):
            raise ValueError("length exceeds the buffer")
        if rtcp:
            return self.protect_rtcp(buf, length, len(buf))
        return self.protect_rtp(buf, length, len(buf), index)

    def _unprotect_with_index(self, bytes packet):
        """Test hook: unprotect, returning (plain packet, 48-bit index)."""
        cdef int length = len(packet)
        cdef bytearray out = bytearray(packet)
        cdef unsigned char *p = out
        cdef unsigned long long index = 0
        cdef int r = self.unprotect_rtp(p, length, &index)
        if r < 0:
            raise SrtpError(r)
        return PyBytes_FromStringAndSize(<char *>p, r), index

    def unprotect(self, bytes packet):
        """Unprotect one SRTP packet; raises SrtpError."""
        return self._unprotect_with_index(packet)[0]

    def protect_rtcp_packet(self, bytes packet):
        """Protect one (compound) RTCP packet; raises SrtpError."""
        cdef int length = len(packet)
        cdef int capacity = length + _SRTP_SRTCP_INDEX_LEN + _SRTP_GCM_TAG_LEN
        cdef bytearray out = bytearray(capacity)
        cdef unsigned char *p = out
        cdef int r
        memcpy(p, <const unsigned char *>packet, length)
        r = self.protect_rtcp(p, length, capacity)
        if r < 0:
            raise SrtpError(r)
        return PyBytes_FromStringAndSize(<char *>p, r)

    def unprotect_rtcp_packet(self, bytes packet):
        """Unprotect one SRTCP packet; raises SrtpError."""
        cdef bytearray out = bytearray(packet)
        cdef unsigned char *p = out
        cdef int r = self.unprotect_rtcp(p, len(packet))
        if r < 0:
            raise SrtpError(r)
        return PyBytes_FromStringAndSize(<char *>p, r)

    # ---- micro-benchmark helpers: n operations in C, returns CPU seconds of this thread ----

    def _bench_protect(self, bytes packet, int n, bint rtcp=False):
        """Protect `packet` n times in C (re-protecting the same buffer in place)."""
        cdef int length = len(packet)
        cdef int capacity = length + 64
        cdef unsigned char *buf = <unsigned char *>malloc(capacity)
        cdef int i
        cdef int r = 0
        cdef unsigned long long index = ((<unsigned long long>1) << 16) | 7
        if buf == NULL:
            raise MemoryError()
        memcpy(buf, <const unsigned char *>packet, length)
        from time import thread_time    # CPU time of this thread: steadier on a shared box
        t0 = thread_time()
        with nogil:
            for i in range(n):
                if rtcp:
                    r = self.protect_rtcp(buf, length, capacity)
                else:
                    r = self.protect_rtp(buf, length, capacity, index)
                if r < 0:
                    break
        t1 = thread_time()
        free(buf)
        if r < 0:
            raise SrtpError(r)
        return t1 - t0

    def _bench_unprotect(self, bytes packet, int n, bint rtcp=False):
        """Unprotect a copy of `packet` n times in C, clearing its replay bits after each (the
        per-iteration memcpy of the packet is included)."""
        cdef int length = len(packet)
        cdef unsigned char *buf = <unsigned char *>malloc(length + 64)
        cdef int i
        cdef int r = 0
        cdef unsigned long long index = 0
        cdef const unsigned char *src = packet
        if buf == NULL:
            raise MemoryError()
        from time import thread_time    # CPU time of this thread: steadier on a shared box
        t0 = thread_time()
        with nogil:
            for i in range(n):
                memcpy(buf, src, length)
                if rtcp:
                    r = self.unprotect_rtcp(buf, length)
                else:
                    r = self.unprotect_rtp(buf, length, &index)
                if r < 0:
                    break
                self._forget_window(rtcp)
        t1 = thread_time()
        free(buf)
        if r < 0:
            raise SrtpError(r)
        return t1 - t0

    cdef void _forget_window(self, bint rtcp) noexcept nogil:
        cdef int i
        cdef _SrtpSsrcState *table = &self._rx_rtcp[0] if rtcp else &self._rx_rtp[0]
        for i in range(_SRTP_SLOTS):
            if table[i].window != NULL:
                memset(table[i].window, 0, _SRTP_WINDOW_WORDS * sizeof(uint64_t))
