// A failed unwrap is a failed test, which is what a test should do; the
// crate's `unwrap_used` lint is meant for library code.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn codec() -> CursorCodec {
    CursorCodec::new(KEY)
}

fn fp(byte: u8) -> Fingerprint {
    Fingerprint([byte; FINGERPRINT_LEN])
}

fn in_page(token: Option<&str>, page_size: u8, skip: u32, last_id: &str) -> SourcePosition {
    SourcePosition::InPage {
        token: token.map(Into::into),
        page_size,
        skip,
        last_id: last_id.into(),
    }
}

fn cursor(sources: Vec<SourcePosition>) -> Cursor {
    Cursor {
        fingerprint: fp(7),
        sources,
    }
}

/// Encode with the test key and decode with the arguments it was issued for.
fn round_trip(c: &Cursor) -> Result<Cursor, CursorError> {
    let codec = codec();
    let s = codec.encode(c)?;
    codec.decode(&s, c.fingerprint, c.sources.len())
}

/// Header for hand-written bodies: version, fingerprint, count.
fn header(version: u8, count: u8) -> Vec<u8> {
    let mut body = vec![version];
    body.extend_from_slice(&fp(7).0);
    body.push(count);
    body
}

/// One InPage source, hand-encoded as version 2 writes it: no token, the
/// page size, skip 1, id "s".
fn in_page_bytes(page_size: u8) -> Vec<u8> {
    vec![TAG_IN_PAGE, 0, page_size, 1, 1, b's']
}

/// Sign a hand-written body with the test key, so decoding gets past the MAC
/// and reaches the check under test.
fn signed(body: Vec<u8>) -> String {
    codec().seal(body).unwrap()
}

fn decode_signed(body: Vec<u8>, sources: usize) -> Result<Cursor, CursorError> {
    codec().decode(&signed(body), fp(7), sources)
}

// --- round trips -----------------------------------------------------------

#[test]
fn each_variant_round_trips() {
    let cases = [
        vec![SourcePosition::Start],
        vec![SourcePosition::Exhausted],
        vec![in_page(None, 1, 0, "alice-0123456789abcdef0")],
        vec![in_page(Some("AAEAAf3x+/=="), 200, u32::MAX, "")],
        vec![in_page(
            Some(&"é".repeat(500)),
            100,
            127,
            &"x".repeat(MAX_ID_LEN),
        )],
        vec![
            SourcePosition::Start,
            in_page(Some("tok"), 50, 128, "bob-1"),
            SourcePosition::Exhausted,
            in_page(None, 7, 16_384, "carol-2"),
        ],
        vec![],
    ];
    for sources in cases {
        let c = cursor(sources);
        assert_eq!(round_trip(&c), Ok(c.clone()));
    }
}

#[test]
fn start_only_cursor_round_trips() {
    let c = cursor(vec![SourcePosition::Start]);
    let s = codec().encode(&c).unwrap();
    // version + fingerprint + count + tag byte + MAC = 35 bytes = 47 chars.
    assert_eq!(s.len(), 47);
    assert_eq!(codec().decode(&s, fp(7), 1), Ok(c));
}

#[test]
fn empty_token_is_not_none() {
    let none = cursor(vec![in_page(None, 10, 0, "a")]);
    let empty = cursor(vec![in_page(Some(""), 10, 0, "a")]);
    let (s_none, s_empty) = (
        codec().encode(&none).unwrap(),
        codec().encode(&empty).unwrap(),
    );
    assert_ne!(s_none, s_empty);
    assert_eq!(codec().decode(&s_none, fp(7), 1), Ok(none));
    assert_eq!(codec().decode(&s_empty, fp(7), 1), Ok(empty));
}

/// The example of the wire-format test, by hand from the module doc, without
/// its tag.
fn documented_example(version: u8) -> (Cursor, Vec<u8>) {
    let c = Cursor {
        fingerprint: fp(0xaa),
        sources: vec![
            SourcePosition::Start,
            in_page(Some("tok"), 50, 300, "s-1"),
            SourcePosition::Exhausted,
            in_page(None, 200, 0, ""),
        ],
    };
    let mut expected = vec![version];
    expected.extend_from_slice(&[0xaa; 16]);
    expected.push(4);
    expected.push(0);
    expected.extend_from_slice(&[1, 4, b't', b'o', b'k', 50, 0xac, 0x02]);
    if version == 3 {
        expected.extend_from_slice(&id_hash("s-1").to_le_bytes());
    } else {
        expected.extend_from_slice(&[3, b's', b'-', b'1']);
    }
    expected.push(2);
    expected.extend_from_slice(&[1, 0, 200, 0]);
    if version == 3 {
        expected.extend_from_slice(&[0; 8]);
    } else {
        expected.push(0);
    }
    (c, expected)
}

#[test]
fn wire_format_matches_the_documented_layout() {
    // Independent of `encode`: the bytes are written out by hand from the
    // module doc, and the tags computed with the blake3 crate directly.
    let (c, mut v3) = documented_example(3);
    let key3 = blake3::derive_key("ssm-session-gateway 2026-11-28 cursor tag v3", KEY);
    let tag = blake3::keyed_hash(&key3, &v3);
    v3.extend_from_slice(&tag.as_bytes()[..16]);
    let s = codec().encode(&c).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(&s).unwrap(), v3);
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    // Version 2, written on demand: the same with ids in full and the
    // domain label before the body.
    let (_, mut v2) = documented_example(2);
    let key2 = blake3::derive_key("ssm-session-gateway 2026-11-28 cursor tag v2", KEY);
    let mut hasher = blake3::Hasher::new_keyed(&key2);
    hasher.update(b"ssm-session-gateway/cursor\0");
    hasher.update(&v2);
    let tag = hasher.finalize();
    v2.extend_from_slice(&tag.as_bytes()[..16]);
    let s2 = codec().writing(2).encode(&c).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(&s2).unwrap(), v2);

    // With session ids as SSM writes them (a name and 17 hex digits),
    // version 3 is the shorter: 8 bytes for each id instead of 1 + 23.
    let real = cursor(vec![in_page(None, 200, 7, "alice-0123456789abcdef0"); 6]);
    let (long, short) = (
        codec().writing(2).encode(&real).unwrap(),
        codec().encode(&real).unwrap(),
    );
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&long).unwrap().len()
            - URL_SAFE_NO_PAD.decode(&short).unwrap().len(),
        6 * 16
    );
}

#[test]
fn a_writer_walking_a_page_writes_what_encode_writes() {
    // As a window moves: one source's skip and last id at a time, its
    // segment the same length (written over in place) until the skip's
    // varint grows at 128, or the other source's token changes.
    for version in [1, 2, 3] {
        let codec = codec().writing(version);
        let mut writer = codec.writer(fp(7), 2);
        let mut sources = vec![in_page(Some("tok"), 200, 0, "a-0"), SourcePosition::Start];
        writer.set(0, &sources[0]);
        for skip in 1..=130u32 {
            let (i, position) = if skip % 7 == 0 {
                (1, in_page(Some(&format!("t{skip}")), 50, 0, "b"))
            } else {
                (
                    0,
                    in_page(Some("tok"), 200, skip, &format!("a-{}", skip % 10)),
                )
            };
            writer.set(i, &position);
            sources[i] = position;
            let mut out = Vec::new();
            writer.encode_into(&mut out).unwrap();
            let expected = codec.encode(&cursor(sources.clone())).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "v{version} skip {skip}"
            );
        }
    }
}

#[test]
fn id_hashes_are_fnv_1a_64() {
    // The published FNV-1a 64 test vectors.
    assert_eq!(id_hash(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(id_hash("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(id_hash("foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn older_versions_are_still_written_on_demand_and_always_read() {
    // Version 1 as the release before version 2 wrote it: HMAC-SHA256.
    let (c, mut expected) = documented_example(1);
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(b"ssm-session-gateway/cursor\0");
    mac.update(&expected);
    let tag = mac.finalize().into_bytes();
    expected.extend_from_slice(&tag[..16]);

    let v1 = codec().writing(1).encode(&c).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(&v1).unwrap(), expected);
    let v2 = codec().writing(2).encode(&c).unwrap();
    let v3 = codec().encode(&c).unwrap();
    assert!(v1 != v2 && v2 != v3 && v1 != v3);
    // Every writer reads every version, and gets the same positions.
    for reader in [codec(), codec().writing(1), codec().writing(2)] {
        for s in [&v1, &v2, &v3] {
            assert_eq!(reader.decode(s, c.fingerprint, 4), Ok(c.clone()));
        }
    }
    // Any other version asked for writes 3.
    assert_eq!(codec().writing(7).encode(&c).unwrap(), v3);
}

#[test]
fn a_position_known_by_its_hash_is_written_without_an_id_by_older_versions() {
    // Read from a version 3 cursor, a source that was not read again has
    // only its last id's hash: versions 1 and 2 write no id, so resuming
    // falls back to `skip`; version 3 writes the hash back.
    let c = cursor(vec![in_page(Some("t"), 10, 3, "alice-1")]);
    let v3 = codec().encode(&c).unwrap();
    let read = codec().decode(&v3, fp(7), 1).unwrap();
    let SourcePosition::InPage { last_id, .. } = &read.sources[0] else {
        panic!("{read:?}")
    };
    assert!(matches!(last_id, LastId::Hash(h) if *h == id_hash("alice-1")));
    assert!(last_id.is("alice-1") && !last_id.is("alice-2"));
    assert_eq!(codec().encode(&read).unwrap(), v3);
    for version in [1, 2] {
        let older = codec().writing(version).encode(&read).unwrap();
        let back = codec().decode(&older, fp(7), 1).unwrap();
        assert_eq!(back, cursor(vec![in_page(Some("t"), 10, 3, "")]));
    }
}

#[test]
fn each_version_has_its_own_mac() {
    // A version byte swapped under a valid tag of another version fails:
    // the version picks the MAC and is under it.
    let (c, _) = documented_example(3);
    for writer in [1u8, 2, 3] {
        for other in [1u8, 2, 3].into_iter().filter(|v| *v != writer) {
            let s = codec().writing(writer).encode(&c).unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(s).unwrap();
            raw[0] = other;
            assert_eq!(
                codec().decode(&URL_SAFE_NO_PAD.encode(&raw), c.fingerprint, 4),
                Err(CursorError::BadSignature),
                "{writer} as {other}"
            );
        }
    }
}

// --- refusals --------------------------------------------------------------

#[test]
fn cursor_from_another_key_is_bad_signature() {
    let c = cursor(vec![in_page(Some("t"), 10, 3, "a")]);
    let s = CursorCodec::new(b"another key, also 32 bytes long!")
        .encode(&c)
        .unwrap();
    assert_eq!(codec().decode(&s, fp(7), 1), Err(CursorError::BadSignature));

    let (a, b) = (CursorCodec::random(), CursorCodec::random());
    let s = a.encode(&c).unwrap();
    assert_eq!(a.decode(&s, fp(7), 1), Ok(c.clone()));
    assert_eq!(b.decode(&s, fp(7), 1), Err(CursorError::BadSignature));
}

#[test]
fn other_arguments_are_wrong_arguments() {
    let c = cursor(vec![SourcePosition::Start, SourcePosition::Exhausted]);
    let s = codec().encode(&c).unwrap();
    assert_eq!(
        codec().decode(&s, fp(8), 2),
        Err(CursorError::WrongArguments)
    );
    assert_eq!(
        codec().decode(&s, fp(7), 1),
        Err(CursorError::WrongArguments)
    );
    assert_eq!(
        codec().decode(&s, fp(7), 3),
        Err(CursorError::WrongArguments)
    );
    assert_eq!(codec().decode(&s, fp(7), 2), Ok(c));
}

#[test]
fn page_size_out_of_range_is_malformed() {
    for bad in [0, 201, 255] {
        let mut body = header(VERSION_2, 1);
        body.extend(in_page_bytes(bad));
        assert_eq!(
            decode_signed(body, 1),
            Err(CursorError::Malformed("page size out of range")),
            "page size {bad}"
        );
        let c = cursor(vec![in_page(None, bad, 1, "s")]);
        assert!(matches!(codec().encode(&c), Err(CursorError::Malformed(_))));
    }
    // The same hand-written body with a valid page size decodes, so the
    // refusals above are about the page size alone.
    for good in [1, 200] {
        let mut body = header(VERSION_2, 1);
        body.extend(in_page_bytes(good));
        let sources = vec![in_page(None, good, 1, "s")];
        assert_eq!(decode_signed(body, 1), Ok(cursor(sources)));
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut body = header(VERSION, 1);
    body.push(TAG_START);
    assert_eq!(
        decode_signed(body.clone(), 1),
        Ok(cursor(vec![SourcePosition::Start]))
    );
    body.push(0);
    assert_eq!(
        decode_signed(body, 1),
        Err(CursorError::Malformed("trailing bytes"))
    );
}

#[test]
fn unknown_version_is_unsupported() {
    for version in [0, 4, 255] {
        let mut body = header(version, 1);
        body.push(TAG_START);
        assert_eq!(
            decode_signed(body, 1),
            Err(CursorError::UnsupportedVersion(version))
        );
    }
}

#[test]
fn malformed_payloads_behind_a_valid_mac_are_refused() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Unknown source tag.
        ([header(VERSION, 1), vec![3]].concat(), "unknown source tag"),
        // Count says two sources, one present.
        (
            [header(VERSION, 2), vec![TAG_START]].concat(),
            "truncated payload",
        ),
        // Count over MAX_SOURCES (65).
        (
            [header(VERSION, 65), vec![TAG_START; 65]].concat(),
            "too many sources",
        ),
        // Token length runs past the end.
        (
            [header(VERSION, 1), vec![TAG_IN_PAGE, 10, b'a']].concat(),
            "truncated payload",
        ),
        // Token over MAX_TOKEN_LEN: 4098 = n + 1 with n = 4097.
        (
            [header(VERSION, 1), vec![TAG_IN_PAGE, 0x82, 0x20]].concat(),
            "token too long",
        ),
        // Token not UTF-8.
        (
            [header(VERSION, 1), vec![TAG_IN_PAGE, 2, 0xff, 10, 0, 0]].concat(),
            "token is not UTF-8",
        ),
        // A version 3 id hash cut short.
        (
            [header(VERSION, 1), vec![TAG_IN_PAGE, 0, 10, 0, 1, 2, 3]].concat(),
            "truncated payload",
        ),
        // Last id over MAX_ID_LEN (version 2).
        (
            [
                header(VERSION_2, 1),
                vec![TAG_IN_PAGE, 0, 10, 0, 97],
                vec![b'a'; 97],
            ]
            .concat(),
            "last id too long",
        ),
        // Last id not UTF-8 (a lone continuation byte; version 2).
        (
            [header(VERSION_2, 1), vec![TAG_IN_PAGE, 0, 10, 0, 1, 0x80]].concat(),
            "last id is not UTF-8",
        ),
        // Skip as a non-minimal varint.
        (
            [header(VERSION, 1), vec![TAG_IN_PAGE, 0, 10, 0x81, 0x00, 0]].concat(),
            "varint not minimally encoded",
        ),
        // Skip over u32::MAX.
        (
            [
                header(VERSION, 1),
                vec![TAG_IN_PAGE, 0, 10, 0xff, 0xff, 0xff, 0xff, 0x10, 0],
            ]
            .concat(),
            "varint overflows u32",
        ),
    ];
    for (body, why) in cases {
        assert_eq!(
            decode_signed(body, 1),
            Err(CursorError::Malformed(why)),
            "{why}"
        );
    }
}

#[test]
fn overlong_string_is_too_large_before_any_other_check() {
    // Not even base64, yet TooLarge: the length check comes first.
    let s = "!".repeat(MAX_CURSOR_LEN + 1);
    assert_eq!(codec().decode(&s, fp(7), 1), Err(CursorError::TooLarge));
    // At exactly the bound the string is looked at (and is not base64).
    let s = "!".repeat(MAX_CURSOR_LEN);
    assert_eq!(codec().decode(&s, fp(7), 1), Err(CursorError::NotBase64));
    // Valid base64 at the bound gets as far as the MAC.
    let s = "A".repeat(MAX_CURSOR_LEN);
    assert_eq!(codec().decode(&s, fp(7), 1), Err(CursorError::BadSignature));
}

#[test]
fn not_base64_is_refused() {
    let valid = codec()
        .encode(&cursor(vec![SourcePosition::Start]))
        .unwrap();
    for s in [
        "not a cursor".to_owned(),
        "abc+def/ghij".to_owned(),    // the standard alphabet, not url-safe
        "AAAAA".to_owned(),           // 4n + 1 characters: no byte string
        "AB".to_owned(),              // stray low bits: not canonical
        format!("{valid}="),          // padding
        format!(" {valid}"),          // whitespace
        format!("{}é", &valid[..46]), // non-ASCII
    ] {
        assert_eq!(
            codec().decode(&s, fp(7), 1),
            Err(CursorError::NotBase64),
            "{s:?}"
        );
    }
}

#[test]
fn empty_and_short_strings_are_too_short() {
    assert_eq!(codec().decode("", fp(7), 0), Err(CursorError::TooShort));
    let valid = codec().encode(&cursor(vec![])).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&valid).unwrap();
    assert_eq!(raw.len(), MIN_RAW_LEN);
    let short = URL_SAFE_NO_PAD.encode(&raw[..MIN_RAW_LEN - 1]);
    assert_eq!(codec().decode(&short, fp(7), 0), Err(CursorError::TooShort));
    assert_eq!(codec().decode(&valid, fp(7), 0), Ok(cursor(vec![])));
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    let too_many = cursor(vec![SourcePosition::Start; MAX_SOURCES + 1]);
    assert_eq!(codec().encode(&too_many), Err(CursorError::TooLarge));
    let most = cursor(vec![SourcePosition::Start; MAX_SOURCES]);
    assert_eq!(round_trip(&most), Ok(most.clone()));

    let long_token = "t".repeat(MAX_TOKEN_LEN);
    let ok = cursor(vec![in_page(Some(&long_token), 10, 0, "a")]);
    assert_eq!(round_trip(&ok), Ok(ok.clone()));
    let too_long = format!("{long_token}t");
    let c = cursor(vec![in_page(Some(&too_long), 10, 0, "a")]);
    assert_eq!(codec().encode(&c), Err(CursorError::TooLarge));

    let c = cursor(vec![in_page(None, 10, 0, &"i".repeat(MAX_ID_LEN + 1))]);
    assert_eq!(codec().encode(&c), Err(CursorError::TooLarge));

    // Every field within bounds, but the whole over MAX_CURSOR_LEN.
    let thousand = "t".repeat(1000);
    let id = "i".repeat(MAX_ID_LEN);
    let c = cursor(vec![
        in_page(Some(&thousand), 200, u32::MAX, &id);
        MAX_SOURCES
    ]);
    assert_eq!(codec().encode(&c), Err(CursorError::TooLarge));
}

#[test]
fn documented_size_bound_holds() {
    // The module doc's worst case: 50 sources, 1,000-byte tokens, 96-byte
    // ids (as version 2 writes them), 5-byte skips is 55,334 bytes, 73,779
    // characters. Version 3 writes 8 bytes for each id.
    let thousand = "t".repeat(1000);
    let id = "i".repeat(MAX_ID_LEN);
    let c = cursor(vec![in_page(Some(&thousand), 200, u32::MAX, &id); 50]);
    let s = codec().writing(2).encode(&c).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(&s).unwrap().len(), 55_334);
    assert_eq!(s.len(), 73_779);
    assert!(s.len() <= MAX_CURSOR_LEN);
    assert_eq!(codec().decode(&s, fp(7), 50), Ok(c.clone()));
    let s3 = codec().encode(&c).unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&s3).unwrap().len(),
        55_334 - 50 * (97 - 8)
    );
    assert_eq!(codec().decode(&s3, fp(7), 50), Ok(c));
}

#[test]
fn varints_are_bounded_and_canonical() {
    for value in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX - 1, u32::MAX] {
        let mut out = Vec::new();
        put_varint(&mut out, value);
        assert!(out.len() <= MAX_VARINT_LEN);
        let mut r = Reader { rest: &out };
        assert_eq!(r.varint(), Ok(value));
        assert!(r.rest.is_empty());
    }
    let refused: [&[u8]; 6] = [
        &[],                                // nothing
        &[0x80],                            // continuation, then nothing
        &[0x80, 0x00],                      // 0, not minimal
        &[0xff, 0xff, 0xff, 0xff, 0x1f],    // 2^33 - 1
        &[0xff, 0xff, 0xff, 0xff, 0x8f, 0], // sixth byte
        &[0x80, 0x80, 0x80, 0x80, 0x00],    // 0 in five bytes
    ];
    for bytes in refused {
        assert!(Reader { rest: bytes }.varint().is_err(), "{bytes:?}");
    }
}

#[test]
fn fingerprint_parts_are_unambiguous() {
    let of =
        |parts: &[&str]| Fingerprint::of(&parts.iter().map(|p| p.as_bytes()).collect::<Vec<_>>());
    assert_ne!(of(&["ab", "c"]), of(&["a", "bc"]));
    assert_ne!(of(&[]), of(&[""]));
    assert_ne!(of(&[""]), of(&["", ""]));
    assert_eq!(of(&["state", "Active"]), of(&["state", "Active"]));
    // SHA-256 of (u64 LE length, bytes) per part, first 16 bytes.
    let mut h = Sha256::new();
    h.update(2u64.to_le_bytes());
    h.update(b"ab");
    assert_eq!(of(&["ab"]).0, h.finalize()[..16]);
}

#[test]
fn messages_and_debug_reveal_nothing() {
    assert_eq!(
        CursorError::NotBase64.to_string(),
        "cursor is not valid base64url"
    );
    assert_eq!(
        CursorError::Malformed("token too long").to_string(),
        "cursor is malformed"
    );
    let debug = format!("{:?}", codec());
    assert_eq!(debug, "CursorCodec { .. }");
}

// --- properties ------------------------------------------------------------

/// Any UTF-8, at most 1,000 bytes (chars are 1 to 4 bytes).
fn arb_token() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::collection::vec(any::<char>(), 0..=250).prop_map(String::from_iter))
}

/// Session-like ids, or any UTF-8 within MAX_ID_LEN bytes.
fn arb_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,32}-[0-9a-f]{17}",
        prop::collection::vec(any::<char>(), 0..=24).prop_map(String::from_iter),
    ]
}

fn arb_position() -> impl Strategy<Value = SourcePosition> {
    prop_oneof![
        1 => Just(SourcePosition::Start),
        1 => Just(SourcePosition::Exhausted),
        4 => (arb_token(), PAGE_SIZE_RANGE, any::<u32>(), arb_id()).prop_map(
            |(token, page_size, skip, last_id)| SourcePosition::InPage {
                token: token.map(Into::into),
                page_size,
                skip,
                last_id: last_id.as_str().into(),
            }
        ),
    ]
}

fn arb_cursor(sources: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Cursor> {
    (
        any::<[u8; 16]>(),
        prop::collection::vec(arb_position(), sources),
    )
        .prop_map(|(fingerprint, sources)| Cursor {
            fingerprint: Fingerprint(fingerprint),
            sources,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// (1) Arbitrary cursors round-trip exactly, and re-encode to the same
    /// string (the encoding is canonical).
    #[test]
    fn arbitrary_cursors_round_trip(c in arb_cursor(1..=50)) {
        let codec = codec();
        let s = codec.encode(&c).unwrap();
        prop_assert!(s.len() <= MAX_CURSOR_LEN);
        let back = codec.decode(&s, c.fingerprint, c.sources.len()).unwrap();
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(codec.encode(&back).unwrap(), s);
    }

    /// A window's writer, fed only the positions that change from one
    /// cursor to the next, writes what `encode` writes for each, in every
    /// version.
    #[test]
    fn a_writer_fed_changes_writes_what_encode_writes(
        cursors in proptest::collection::vec(arb_cursor(3..=3), 1..6),
        version in 1u8..=3,
    ) {
        let codec = codec().writing(version);
        let mut writer = codec.writer(fp(7), 3);
        let mut previous = vec![SourcePosition::Start; 3];
        for c in &cursors {
            for (i, position) in c.sources.iter().enumerate() {
                if previous[i] != *position {
                    writer.set(i, position);
                }
            }
            previous.clone_from(&c.sources);
            let mut out = Vec::new();
            let expected = codec.encode(&Cursor { fingerprint: fp(7), sources: c.sources.clone() });
            match (writer.encode_into(&mut out), expected) {
                (Ok(()), Ok(s)) => prop_assert_eq!(String::from_utf8(out).unwrap(), s),
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "writer {a:?}, encode {b:?}"),
            }
        }
    }

    /// The SIMD encoder `encode` uses writes exactly what the `base64`
    /// crate's `URL_SAFE_NO_PAD` writes and `decode` reads back.
    #[test]
    fn the_simd_encoder_is_url_safe_no_pad(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let mut out = b"prefix".to_vec();
        base64_simd::URL_SAFE_NO_PAD.encode_append(&bytes, &mut out);
        let expected = URL_SAFE_NO_PAD.encode(&bytes);
        prop_assert_eq!(&out[6..], expected.as_bytes());
    }

    /// (4) Fifty sources with 1,000-byte tokens stay under the bound, however
    /// the other fields vary.
    #[test]
    fn fifty_sources_with_long_tokens_fit(
        fingerprint in any::<[u8; 16]>(),
        sources in prop::collection::vec(
            ("[ -~]{1000}", PAGE_SIZE_RANGE, any::<u32>(), "[a-zA-Z0-9-]{1,96}"),
            50,
        ),
    ) {
        let c = Cursor {
            fingerprint: Fingerprint(fingerprint),
            sources: sources
                .into_iter()
                .map(|(token, page_size, skip, last_id)| SourcePosition::InPage {
                    token: Some(token.into()),
                    page_size,
                    skip,
                    last_id: last_id.as_str().into(),
                })
                .collect(),
        };
        let s = codec().encode(&c).unwrap();
        prop_assert!(s.len() <= 73_779);
        prop_assert!(s.len() <= MAX_CURSOR_LEN);
        prop_assert_eq!(codec().decode(&s, c.fingerprint, 50), Ok(c));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (2) Any single bit flip, any truncation, any appended bytes: refused.
    #[test]
    fn tampering_is_detected(
        c in arb_cursor(1..=4),
        bit in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..16),
        version in 1u8..=2,
    ) {
        let codec = codec().writing(version);
        let s = codec.encode(&c).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&s).unwrap();
        let decode = |bytes: &[u8]| {
            codec.decode(&URL_SAFE_NO_PAD.encode(bytes), c.fingerprint, c.sources.len())
        };

        let mut flipped = raw.clone();
        let bit = bit.index(raw.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode(&flipped).is_err());

        let cut = cut.index(raw.len());
        prop_assert!(decode(&raw[..cut]).is_err());
        // Cutting the string itself (possibly mid-character group).
        prop_assert!(codec.decode(&s[..cut], c.fingerprint, c.sources.len()).is_err());

        let appended = [raw.as_slice(), extra.as_slice()].concat();
        prop_assert!(decode(&appended).is_err());
    }

    /// (3) Arbitrary strings never panic and never decode without the key.
    #[test]
    fn arbitrary_strings_are_refused(s in any::<String>(), sources in 0usize..4) {
        prop_assert!(codec().decode(&s, fp(7), sources).is_err());
    }

    /// (3) Nor does base64url of arbitrary bytes, including bytes shaped like
    /// a real cursor (version 1, the right fingerprint) with a guessed tag.
    #[test]
    fn arbitrary_base64_is_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        shaped in any::<bool>(),
    ) {
        let bytes = if shaped {
            [header(VERSION, 1).as_slice(), &[TAG_START], &bytes].concat()
        } else {
            bytes
        };
        let s = URL_SAFE_NO_PAD.encode(&bytes);
        prop_assert!(codec().decode(&s, fp(7), 1).is_err());
    }

    /// The parser behind the MAC never panics either: sign arbitrary bodies
    /// (and near-valid ones with one byte changed) with the real key. What it
    /// accepts re-encodes to the same string, so the format stays canonical.
    #[test]
    fn signed_garbage_never_panics(
        c in arb_cursor(1..=3),
        arbitrary in prop::collection::vec(any::<u8>(), 0..200),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        use_arbitrary in any::<bool>(),
    ) {
        let codec = codec();
        let body = if use_arbitrary {
            [&[VERSION][..], &c.fingerprint.0, &arbitrary].concat()
        } else {
            let raw = URL_SAFE_NO_PAD.decode(codec.encode(&c).unwrap()).unwrap();
            let mut body = raw[..raw.len() - TAG_LEN].to_vec();
            let at = at.index(body.len());
            body[at] = byte;
            body
        };
        let s = codec.seal(body).unwrap();
        for sources in 0..=4 {
            if let Ok(decoded) = codec.decode(&s, c.fingerprint, sources) {
                prop_assert_eq!(codec.encode(&decoded).unwrap(), s.clone());
            }
        }
    }
}
