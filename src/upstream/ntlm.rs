//! The client side of NTLM authentication to an upstream HTTP proxy (`Proxy-Authorization: NTLM <base64>`).
//!
//! NTLMv2 only, per Microsoft's [MS-NLMP] specification: the NEGOTIATE_MESSAGE (type 1), parsing the proxy's
//! CHALLENGE_MESSAGE (type 2) and the AUTHENTICATE_MESSAGE (type 3) with the NTLMv2 and LMv2 responses
//! (MS-NLMP 3.3.2). LM and NTLMv1 are never sent; there is no signing, sealing, key exchange or MIC, which an
//! HTTP proxy handshake does not use. The caller does the base64 and the headers.
//!
//! Written by hand: the crates that speak NTLM are either whole SSPI stacks, far larger than these three
//! messages, or carry the LM/NTLMv1/DES code this agent must never use; ring has neither MD4 nor MD5, so the
//! hashes come from the small RustCrypto crates (`md4`, `md-5`, `hmac`), and randomness from rustls's ring.
//!
//! [MS-NLMP]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use md4::{Digest, Md4};
use md5::Md5;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const NEGOTIATE_OEM: u32 = 0x0000_0002;
const REQUEST_TARGET: u32 = 0x0000_0004;
const NEGOTIATE_NTLM: u32 = 0x0000_0200;
const NEGOTIATE_ALWAYS_SIGN: u32 = 0x0000_8000;
const NEGOTIATE_EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
const NEGOTIATE_128: u32 = 0x2000_0000;
const NEGOTIATE_56: u32 = 0x8000_0000;
/// The flags of the NEGOTIATE_MESSAGE (MS-NLMP 2.2.2.5).
const NEGOTIATE_FLAGS: u32 = NEGOTIATE_UNICODE
    | NEGOTIATE_OEM
    | REQUEST_TARGET
    | NEGOTIATE_NTLM
    | NEGOTIATE_ALWAYS_SIGN
    | NEGOTIATE_EXTENDED_SESSIONSECURITY
    | NEGOTIATE_128
    | NEGOTIATE_56;
/// AV_PAIR ids (MS-NLMP 2.2.2.1).
const AV_EOL: u16 = 0;
const AV_FLAGS: u16 = 6;
const AV_TIMESTAMP: u16 = 7;
/// MsvAvFlags bit 0x2, "the client is providing a MIC", kept clear since no MIC is sent.
const AV_FLAG_MIC: u8 = 0x02;
/// The NTLMv2 response adds 48 bytes to the target info and must still fit a 16-bit length.
const MAX_TARGET_INFO: usize = u16::MAX as usize - 48;
/// The AUTHENTICATE_MESSAGE's fixed part when it has neither Version nor MIC.
const AUTHENTICATE_HEADER: usize = 64;
/// From 1601-01-01 (FILETIME's epoch) to 1970-01-01, in 100 ns ticks.
const FILETIME_UNIX_EPOCH: u128 = 116_444_736_000_000_000;

/// Who the agent authenticates as to the proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct NtlmCredentials {
    /// The user's domain (MS-NLMP's UserDom); may be empty.
    pub domain: String,
    /// The user name, without a domain prefix.
    pub user: String,
    /// The password; never printed.
    pub password: String,
}

impl fmt::Debug for NtlmCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NtlmCredentials")
            .field("domain", &self.domain)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why the NTLM handshake cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum NtlmError {
    /// The message ends before a fixed field.
    #[error("the proxy's NTLM challenge is malformed: {0} bytes is too short")]
    Truncated(usize),
    /// The first 8 bytes are not "NTLMSSP\0".
    #[error("the proxy's NTLM challenge is malformed: it does not start with the NTLMSSP signature")]
    BadSignature,
    /// Not a CHALLENGE_MESSAGE.
    #[error("the proxy's NTLM challenge is malformed: message type {0}, expected 2 (CHALLENGE_MESSAGE)")]
    WrongMessageType(u32),
    /// A payload field's offset and length reach past the message.
    #[error("the proxy's NTLM challenge is malformed: its {0} field points outside the message")]
    OutOfRange(&'static str),
    /// The AV_PAIR list is not well formed.
    #[error("the proxy's NTLM challenge is malformed: its target information {0}")]
    BadTargetInfo(&'static str),
    /// The system gave no random bytes.
    #[error("could not draw a random NTLM client challenge")]
    Random,
}

/// The parts of the proxy's CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) that the answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// NegotiateFlags as the proxy chose them.
    pub flags: u32,
    /// The proxy's 8-byte nonce.
    pub server_challenge: [u8; 8],
    /// The AV_PAIR list (MS-NLMP 2.2.2.1), echoed inside the NTLMv2 response; empty if the proxy sent none.
    pub target_info: Vec<u8>,
}

/// The NEGOTIATE_MESSAGE (type 1) that opens the handshake: no domain, workstation or version.
pub fn negotiate_message() -> Vec<u8> {
    // DomainNameFields and WorkstationFields: length 0, offset where the (empty) payload starts.
    let empty_field: &[u8] = &[0, 0, 0, 0, 32, 0, 0, 0];
    [SIGNATURE.as_slice(), &1u32.to_le_bytes(), &NEGOTIATE_FLAGS.to_le_bytes(), empty_field, empty_field].concat()
}

/// Parses the proxy's CHALLENGE_MESSAGE (type 2), already base64-decoded. Checks every length and offset.
pub fn parse_challenge(message: &[u8]) -> Result<Challenge, NtlmError> {
    let (Some(kind), Some(flags), Some(server_challenge)) =
        (u32_at(message, 8), u32_at(message, 20), message.get(24..32).and_then(|s| s.try_into().ok()))
    else {
        return Err(NtlmError::Truncated(message.len()));
    };
    if !message.starts_with(SIGNATURE) {
        return Err(NtlmError::BadSignature);
    }
    if kind != 2 {
        return Err(NtlmError::WrongMessageType(kind));
    }
    // Without NEGOTIATE_TARGET_INFO the message may stop before TargetInfoFields (bytes 40..48).
    let target_info = if flags & NEGOTIATE_TARGET_INFO == 0 {
        Vec::new()
    } else {
        let target_info = payload_field(message, 40, "target information")?;
        if target_info.len() > MAX_TARGET_INFO {
            return Err(NtlmError::BadTargetInfo("is too long"));
        }
        walk_av_pairs(target_info, |_, _, _| {})?;
        target_info.to_vec()
    };
    Ok(Challenge { flags, server_challenge, target_info })
}

/// The AUTHENTICATE_MESSAGE (type 3) answering `challenge`, with the NTLMv2 and LMv2 responses.
///
/// `timestamp` is a FILETIME (100 ns ticks since 1601-01-01 UTC); the proxy's MsvAvTimestamp replaces it when
/// the target info has one, and the LM response is then 24 zero bytes (MS-NLMP 3.1.5.1.2). The workstation
/// is left empty. Strings are sent as UTF-16LE; a field longer than 65535 bytes is cut to fit its length.
pub fn authenticate_message(
    credentials: &NtlmCredentials,
    challenge: &Challenge,
    client_challenge: [u8; 8],
    timestamp: u64,
) -> Vec<u8> {
    let (target_info, server_time) = client_target_info(&challenge.target_info);
    let key = ntowfv2(credentials);
    let server_challenge = &challenge.server_challenge;
    let time = server_time.unwrap_or(timestamp);
    let nt = ntlmv2_response(&key, server_challenge, &client_challenge, time, &target_info);
    let lm = match server_time {
        Some(_) => vec![0; 24],
        None => lmv2_response(&key, server_challenge, &client_challenge),
    };
    let flags = (NEGOTIATE_FLAGS & challenge.flags & !NEGOTIATE_OEM) | NEGOTIATE_UNICODE | NEGOTIATE_NTLM;
    let domain = utf16le(&credentials.domain);
    let user = utf16le(&credentials.user);
    // LmChallengeResponse, NtChallengeResponse, DomainName, UserName, Workstation, EncryptedRandomSessionKey.
    let fields: [&[u8]; 6] = [&lm, &nt, &domain, &user, &[], &[]];
    let mut header = [0u8; AUTHENTICATE_HEADER];
    header[..8].copy_from_slice(SIGNATURE);
    header[8..12].copy_from_slice(&3u32.to_le_bytes());
    header[60..64].copy_from_slice(&flags.to_le_bytes());
    let mut payload = Vec::new();
    for (descriptor, data) in header[12..60].chunks_exact_mut(8).zip(fields) {
        let data = &data[..data.len().min(usize::from(u16::MAX))];
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX).to_le_bytes();
        let offset = u32::try_from(AUTHENTICATE_HEADER + payload.len()).unwrap_or(u32::MAX).to_le_bytes();
        descriptor.copy_from_slice(&[len[0], len[1], len[0], len[1], offset[0], offset[1], offset[2], offset[3]]);
        payload.extend_from_slice(data);
    }
    [header.as_slice(), &payload].concat()
}

/// Parses `challenge_message` and answers it with a fresh random client challenge and the current time.
pub fn authenticate(credentials: &NtlmCredentials, challenge_message: &[u8]) -> Result<Vec<u8>, NtlmError> {
    let challenge = parse_challenge(challenge_message)?;
    let mut client_challenge = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut client_challenge)
        .map_err(|_| NtlmError::Random)?;
    Ok(authenticate_message(credentials, &challenge, client_challenge, filetime_now()))
}

/// Now as a FILETIME; a clock before 1970 counts as 1970.
fn filetime_now() -> u64 {
    let since_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_unix.as_nanos() / 100 + FILETIME_UNIX_EPOCH).unwrap_or(u64::MAX)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The payload bytes that the (length, max length, offset) descriptor at `at` points to.
fn payload_field<'a>(message: &'a [u8], at: usize, name: &'static str) -> Result<&'a [u8], NtlmError> {
    let (Some(len), Some(offset)) = (u16_at(message, at), u32_at(message, at + 4)) else {
        return Err(NtlmError::Truncated(message.len()));
    };
    let start = usize::try_from(offset).map_err(|_| NtlmError::OutOfRange(name))?;
    start.checked_add(usize::from(len)).and_then(|end| message.get(start..end)).ok_or(NtlmError::OutOfRange(name))
}

/// Calls `visit(id, value offset, value)` for each AV_PAIR before MsvAvEOL; errs if the list is not terminated.
fn walk_av_pairs(target_info: &[u8], mut visit: impl FnMut(u16, usize, &[u8])) -> Result<(), NtlmError> {
    let mut at = 0;
    loop {
        let (Some(id), Some(len)) = (u16_at(target_info, at), u16_at(target_info, at + 2)) else {
            return Err(NtlmError::BadTargetInfo("does not end with MsvAvEOL"));
        };
        if id == AV_EOL {
            return Ok(());
        }
        let start = at + 4;
        let value = target_info
            .get(start..start + usize::from(len))
            .ok_or(NtlmError::BadTargetInfo("has an entry running past its end"))?;
        visit(id, start, value);
        at = start + value.len();
    }
}

/// The target info as the client echoes it (MsvAvFlags' MIC bit cleared), and the proxy's MsvAvTimestamp.
fn client_target_info(target_info: &[u8]) -> (Vec<u8>, Option<u64>) {
    let (mut timestamp, mut flags_at) = (None, None);
    // A list that parse_challenge rejected can only come from a hand-made Challenge: it is echoed as it is.
    let _ = walk_av_pairs(target_info, |id, at, value| match id {
        AV_TIMESTAMP => timestamp = value.try_into().ok().map(u64::from_le_bytes),
        AV_FLAGS if value.len() == 4 => flags_at = Some(at),
        _ => {}
    });
    let mut echoed = target_info.to_vec();
    if let Some(low_byte) = flags_at.and_then(|at| echoed.get_mut(at)) {
        *low_byte &= !AV_FLAG_MIC;
    }
    (echoed, timestamp)
}

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Upper case one character at a time, as Windows does: a character whose upper case is longer stays as it is.
fn upper(text: &str) -> String {
    text.chars()
        .map(|c| Some(c.to_uppercase()).filter(|u| u.len() == 1).and_then(|mut u| u.next()).unwrap_or(c))
        .collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = Hmac::<Md5>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// NTOWFv2 (MS-NLMP 3.3.2): HMAC_MD5(MD4(UNICODE(password)), UNICODE(UPPERCASE(user) + domain)).
fn ntowfv2(credentials: &NtlmCredentials) -> [u8; 16] {
    let nt_hash: [u8; 16] = Md4::digest(utf16le(&credentials.password)).into();
    hmac_md5(&nt_hash, &[&utf16le(&(upper(&credentials.user) + &credentials.domain))])
}

/// The NTLMv2_RESPONSE: NTProofStr followed by the NTLMv2_CLIENT_CHALLENGE blob it covers (MS-NLMP 3.3.2).
fn ntlmv2_response(key: &[u8; 16], server: &[u8; 8], client: &[u8; 8], time: u64, target_info: &[u8]) -> Vec<u8> {
    // RespType 1, HiRespType 1, six reserved zero bytes, TimeStamp, ChallengeFromClient, four zero bytes, AvPairs,
    // and the four zero bytes that 3.3.2's temp ends with.
    let header: &[u8] = &[1, 1, 0, 0, 0, 0, 0, 0];
    let blob = [header, &time.to_le_bytes(), client, &[0; 4], target_info, &[0; 4]].concat();
    let nt_proof = hmac_md5(key, &[server, &blob]);
    [nt_proof.as_slice(), &blob].concat()
}

/// The LMv2_RESPONSE: HMAC_MD5(ResponseKeyLM, server challenge + client challenge) + client challenge.
fn lmv2_response(key: &[u8; 16], server: &[u8; 8], client: &[u8; 8]) -> Vec<u8> {
    [hmac_md5(key, &[server, client]).as_slice(), client].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
    }

    fn spec_credentials() -> NtlmCredentials {
        NtlmCredentials { domain: "Domain".into(), user: "User".into(), password: "Password".into() }
    }

    /// MS-NLMP 4.2.4.3, the CHALLENGE_MESSAGE of the NTLMv2 example: target name "Server", target info
    /// MsvAvNbDomainName "Domain", MsvAvNbComputerName "Server", MsvAvEOL.
    const SPEC_CHALLENGE: &str = "4e544c4d53535000 02000000 0c000c00 38000000 33828ae2 0123456789abcdef
        0000000000000000 24002400 44000000 060070170000000f 530065007200760065007200
        02000c0044006f006d00610069006e00 01000c0053006500720076006500720000000000";
    const SPEC_TARGET_INFO: &str = "02000c0044006f006d00610069006e00 01000c0053006500720076006500720000000000";

    fn challenge_with(flags: u32, target_info: &[u8]) -> Vec<u8> {
        let mut message = [SIGNATURE.as_slice(), &2u32.to_le_bytes(), &[0, 0, 0, 0, 48, 0, 0, 0]].concat();
        message.extend_from_slice(&flags.to_le_bytes());
        message.extend_from_slice(&hex("0123456789abcdef 0000000000000000"));
        let len = u16::try_from(target_info.len()).unwrap().to_le_bytes();
        message.extend_from_slice(&[len[0], len[1], len[0], len[1], 48, 0, 0, 0]);
        [message.as_slice(), target_info].concat()
    }

    /// The published values of MS-NLMP 4.2.4 (User "User", UserDom "Domain", Passwd "Password", server challenge
    /// 0123456789abcdef, client challenge aa * 8, time 0): 4.2.4.1.1 ResponseKeyNT, 4.2.4.1.2 SessionBaseKey,
    /// 4.2.4.2.1 LMv2 response, 4.2.4.2.2 NTLMv2 response.
    #[test]
    fn ms_nlmp_4_2_4_vectors() {
        let key = ntowfv2(&spec_credentials());
        assert_eq!(key.to_vec(), hex("0c868a403bfd7a93a3001ef22ef02e3f"));
        let (server, client) = ([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef], [0xaa; 8]);
        let lm = lmv2_response(&key, &server, &client);
        assert_eq!(lm, hex("86c35097ac9cec102554764a57cccc19 aaaaaaaaaaaaaaaa"));
        let nt = ntlmv2_response(&key, &server, &client, 0, &hex(SPEC_TARGET_INFO));
        let blob = "0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000";
        let expected = format!("68cd0ab851e51c96aabc927bebef6a1c {blob} {SPEC_TARGET_INFO} 00000000");
        assert_eq!(nt, hex(&expected));
        // SessionBaseKey = HMAC_MD5(ResponseKeyNT, NTProofStr) (MS-NLMP 3.3.2).
        assert_eq!(hmac_md5(&key, &[&nt[..16]]).to_vec(), hex("8de40ccadbc14a82f15cb0ad0de95ca3"));
    }

    fn field(message: &[u8], at: usize) -> &[u8] {
        payload_field(message, at, "test").unwrap()
    }

    #[test]
    fn answers_the_spec_challenge_with_the_spec_responses() {
        let challenge = parse_challenge(&hex(SPEC_CHALLENGE)).unwrap();
        assert_eq!(challenge.flags, 0xe28a_8233);
        assert_eq!(challenge.server_challenge.to_vec(), hex("0123456789abcdef"));
        assert_eq!(challenge.target_info, hex(SPEC_TARGET_INFO));
        let message = authenticate_message(&spec_credentials(), &challenge, [0xaa; 8], 0);
        assert_eq!(&message[..8], SIGNATURE);
        assert_eq!(u32_at(&message, 8), Some(3));
        assert_eq!(field(&message, 12), hex("86c35097ac9cec102554764a57cccc19 aaaaaaaaaaaaaaaa"));
        assert_eq!(field(&message, 20)[..16], hex("68cd0ab851e51c96aabc927bebef6a1c"));
        assert_eq!(field(&message, 20).len(), 16 + 28 + 36 + 4);
        assert_eq!(field(&message, 28), utf16le("Domain"));
        assert_eq!(field(&message, 36), utf16le("User"));
        assert!(field(&message, 44).is_empty() && field(&message, 52).is_empty());
        assert_eq!(u32_at(&message, 60), Some(0xa008_8201));
    }

    #[test]
    fn parses_a_hand_built_challenge() {
        let message = challenge_with(NEGOTIATE_UNICODE | NEGOTIATE_TARGET_INFO, &hex(SPEC_TARGET_INFO));
        let server_challenge = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        let expected = Challenge { flags: 0x0080_0001, server_challenge, target_info: hex(SPEC_TARGET_INFO) };
        assert_eq!(parse_challenge(&message).unwrap(), expected);
        // Without NEGOTIATE_TARGET_INFO the message may end before TargetInfoFields.
        let short = parse_challenge(&challenge_with(NEGOTIATE_UNICODE, &[])[..32]).unwrap();
        assert!(short.target_info.is_empty());
    }

    #[test]
    fn the_proxys_timestamp_wins_and_the_mic_flag_stays_clear() {
        let target_info = hex("0600 0400 03000000 0700 0800 1122334455667788 00000000");
        let challenge = parse_challenge(&challenge_with(NEGOTIATE_UNICODE | NEGOTIATE_TARGET_INFO, &target_info));
        let message = authenticate_message(&spec_credentials(), &challenge.unwrap(), [7; 8], 42);
        let nt = field(&message, 20);
        assert_eq!(nt[24..32], hex("1122334455667788"));
        assert_eq!(nt[44..48], hex("0600 0400"));
        assert_eq!(nt[48], 0x01, "MsvAvFlags keeps the proxy's bits but not the MIC one");
        assert_eq!(field(&message, 12), [0; 24]);
    }

    #[test]
    fn negotiate_message_layout() {
        let message = negotiate_message();
        assert_eq!((message.len(), &message[..8], u32_at(&message, 8)), (32, SIGNATURE.as_slice(), Some(1)));
        assert_eq!(u32_at(&message, 12), Some(0xa008_8207));
    }

    #[test]
    fn rejects_malformed_challenges() {
        let good = challenge_with(NEGOTIATE_TARGET_INFO, &hex(SPEC_TARGET_INFO));
        let with = |at: usize, bytes: &[u8]| [&good[..at], bytes, &good[at + bytes.len()..]].concat();
        let target_info = |text: &str| challenge_with(NEGOTIATE_TARGET_INFO, &hex(text));
        let cases = [
            ("empty", Vec::new(), "0 bytes is too short"),
            ("signature only", SIGNATURE.to_vec(), "8 bytes is too short"),
            ("cut in the challenge", good[..31].to_vec(), "31 bytes is too short"),
            ("cut in target info fields", good[..44].to_vec(), "44 bytes is too short"),
            ("bad signature", with(0, b"X"), "NTLMSSP signature"),
            ("wrong type", with(8, &[3]), "message type 3"),
            ("offset past the end", with(44, &[0xff; 4]), "points outside"),
            ("length past the end", with(40, &[0xff]), "points outside"),
            ("no MsvAvEOL", target_info("0100 0200 5300"), "does not end with MsvAvEOL"),
            ("AV_PAIR past the end", target_info("0100 0800 5300 00000000"), "running past its end"),
        ];
        for (name, message, expected) in cases {
            let error = parse_challenge(&message).expect_err(name).to_string();
            assert!(error.contains(expected), "{name}: {error}");
        }
    }

    #[test]
    fn never_panics_on_prefixes_mutations_or_noise() {
        let spec = hex(SPEC_CHALLENGE);
        for end in 0..spec.len() {
            let _ = parse_challenge(&spec[..end]);
        }
        for (at, value) in (0..spec.len()).flat_map(|at| [0x00, 0x7f, 0x80, 0xff].map(|value| (at, value))) {
            let mut mutated = spec.clone();
            mutated[at] = value;
            let _ = parse_challenge(&mutated).map(|c| authenticate_message(&spec_credentials(), &c, [0; 8], 0));
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise: Vec<u8> = (0..state % 96).map(|i| (state >> (i % 57)) as u8).collect();
            let _ = parse_challenge(&[&spec[..(state % 48) as usize], noise.as_slice()].concat());
        }
    }

    #[test]
    fn authenticate_draws_a_fresh_client_challenge() {
        let (spec, credentials) = (hex(SPEC_CHALLENGE), spec_credentials());
        let (first, second) = (authenticate(&credentials, &spec).unwrap(), authenticate(&credentials, &spec).unwrap());
        assert_eq!(u32_at(&first, 8), Some(3));
        assert_ne!(field(&first, 12)[16..], field(&second, 12)[16..]);
        assert!(authenticate(&credentials, b"NTLMSSP\0").is_err());
    }

    #[test]
    fn debug_redacts_the_password() {
        let shown = format!("{:?}", spec_credentials());
        assert!(shown.contains("User") && shown.contains("<redacted>") && !shown.contains("Password"));
    }
}
