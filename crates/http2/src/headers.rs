//! Header blocks: a decoded request header list becomes an [`http::request::Parts`]; a response head becomes an
//! HPACK block.
//!
//! Responses are encoded statelessly, every field a literal "without indexing" (RFC 7541 §6.2.2), so the encoder
//! holds no dynamic table per connection. The few bytes this costs per response are nothing next to a map.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version, request, response};

/// Per RFC 9113 §8.2.2 these are connection-specific and must not appear in HTTP/2.
const CONNECTION_SPECIFIC: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Collects decoded header fields into a request head, checking what RFC 9113 §8.3 requires of them.
#[derive(Default)]
pub struct RequestHead {
    /// Beyond this list size fields are counted but no longer kept: HPACK lets a small block reference one large
    /// table entry many times, so the decoded list could otherwise be far larger than the block.
    max_list_size: usize,
    method: Option<Method>,
    scheme: Option<String>,
    authority: Option<String>,
    path: Option<String>,
    headers: HeaderMap,
    /// Bytes of the header list as RFC 9113 §6.5.2 counts them (name + value + 32 per field).
    list_size: usize,
    regular_seen: bool,
    error: Option<&'static str>,
}

impl RequestHead {
    /// An empty head that keeps fields until their list size passes `max_list_size`.
    pub fn new(max_list_size: usize) -> RequestHead {
        RequestHead { max_list_size, ..RequestHead::default() }
    }

    /// Adds one decoded field; the first problem found is kept and reported by [`RequestHead::finish`].
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.list_size += name.len() + value.len() + 32;
        if self.list_size > self.max_list_size {
            self.error = Some("header list larger than SETTINGS_MAX_HEADER_LIST_SIZE");
        }
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.try_field(name, value) {
            self.error = Some(e);
        }
    }

    fn try_field(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular_seen {
                return Err("pseudo-header after a regular header");
            }
            let text = || std::str::from_utf8(value).map(str::to_owned).map_err(|_| "pseudo-header is not UTF-8");
            let slot = match pseudo {
                b"method" => {
                    let method = Method::from_bytes(value).map_err(|_| "invalid :method")?;
                    return set_once(&mut self.method, method);
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                _ => return Err("unknown pseudo-header"),
            };
            return set_once(slot, text()?);
        }
        self.regular_seen = true;
        if name.iter().any(u8::is_ascii_uppercase) {
            return Err("uppercase header name");
        }
        let name = HeaderName::from_bytes(name).map_err(|_| "invalid header name")?;
        if CONNECTION_SPECIFIC.contains(&name) {
            return Err("connection-specific header field");
        }
        if name == header::TE && value != b"trailers" {
            return Err("te other than \"trailers\"");
        }
        let value = HeaderValue::from_bytes(value).map_err(|_| "invalid header value")?;
        self.headers.append(name, value);
        Ok(())
    }

    /// Size of the decoded header list so far.
    pub fn list_size(&self) -> usize {
        self.list_size
    }

    /// The request head, or what makes the request malformed.
    pub fn finish(self) -> Result<request::Parts, &'static str> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let method = self.method.ok_or("missing :method")?;
        if method == Method::CONNECT {
            return Err("CONNECT is not served");
        }
        let path = self.path.filter(|p| !p.is_empty()).ok_or("missing :path")?;
        // RFC 9113 requires :scheme, but hyper's client leaves it out for a path-only URI (as tailscale-rs's
        // control client sends them), and inside a Noise channel there is no scheme to choose between.
        let mut uri = Uri::builder().path_and_query(path);
        if let Some(authority) =
            self.authority.or_else(|| self.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
        {
            uri = uri.scheme(self.scheme.as_deref().unwrap_or("http")).authority(authority);
        }
        let uri = uri.build().map_err(|_| "invalid :scheme, :authority or :path")?;
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.version = Version::HTTP_2;
        parts.headers = self.headers;
        Ok(parts)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), &'static str> {
    if slot.replace(value).is_some() {
        return Err("repeated pseudo-header");
    }
    Ok(())
}

/// The declared `content-length` of a request, if any; `Err` when it is not a single decimal number.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else { return Ok(None) };
    let parsed = first.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or("invalid content-length")?;
    if values.any(|v| v != first) {
        return Err("conflicting content-length values");
    }
    Ok(Some(parsed))
}

/// Appends the HPACK block for a response head: `:status`, then every header the HTTP/2 connection may carry.
pub fn encode_response(head: &response::Parts, out: &mut Vec<u8>) {
    encode_status(head.status, out);
    for (name, value) in &head.headers {
        if CONNECTION_SPECIFIC.contains(name) {
            continue;
        }
        // Literal without indexing, new name (first byte 0), neither string Huffman-coded.
        out.push(0);
        encode_string(name.as_str().as_bytes(), out);
        encode_string(value.as_bytes(), out);
    }
}

/// Appends `:status` alone: the whole head of a response this layer makes itself (the request never reached the
/// service), and the first field of every other.
pub fn encode_status(status: StatusCode, out: &mut Vec<u8>) {
    // The static table (RFC 7541 appendix A) holds `:status` with these values at indices 8–14.
    const INDEXED: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if let Some(i) = INDEXED.iter().position(|&s| s == status.as_u16()) {
        encode_integer(8 + i, 7, 0x80, out);
        return;
    }
    // Literal without indexing, name from static index 8.
    encode_integer(8, 4, 0x00, out);
    encode_string(status.as_str().as_bytes(), out);
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_integer(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: an integer with an `prefix_bits`-bit prefix, the byte's other bits set from `first`.
fn encode_integer(mut value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)]) -> Result<request::Parts, &'static str> {
        let mut head = RequestHead::new(16 * 1024);
        for (n, v) in fields {
            head.field(n.as_bytes(), v.as_bytes());
        }
        head.finish()
    }

    const BASE: [(&str, &str); 4] =
        [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1:8080"), (":path", "/machine/map?x=1")];

    #[test]
    fn a_well_formed_request_keeps_its_method_uri_and_headers() {
        let mut fields = BASE.to_vec();
        fields.push(("content-type", "application/json"));
        fields.push(("x-multi", "a"));
        fields.push(("x-multi", "b"));
        let parts = head(&fields).unwrap();
        assert_eq!(parts.method, Method::POST);
        assert_eq!(parts.uri, "http://127.0.0.1:8080/machine/map?x=1");
        assert_eq!(parts.version, Version::HTTP_2);
        assert_eq!(parts.headers["content-type"], "application/json");
        assert_eq!(parts.headers.get_all("x-multi").iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn a_path_without_scheme_or_authority_is_accepted() {
        let parts = head(&[BASE[0], BASE[3]]).unwrap();
        assert_eq!(parts.uri, "/machine/map?x=1");
        let parts = head(&[BASE[0], BASE[2], BASE[3]]).unwrap();
        assert_eq!(parts.uri, "http://127.0.0.1:8080/machine/map?x=1");
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&BASE[1..], "missing :method"),
            (&[BASE[0], BASE[1], BASE[2]], "missing :path"),
            (&[BASE[0], BASE[0], BASE[1], BASE[3]], "repeated pseudo-header"),
            (&[BASE[0], ("x", "y"), BASE[1], BASE[3]], "pseudo-header after a regular header"),
            (&[BASE[0], BASE[1], BASE[3], ("Host", "a")], "uppercase header name"),
            (&[BASE[0], BASE[1], BASE[3], ("connection", "close")], "connection-specific header field"),
            (&[BASE[0], BASE[1], BASE[3], ("te", "gzip")], "te other than \"trailers\""),
            (&[BASE[0], BASE[1], BASE[3], (":status", "200")], "unknown pseudo-header"),
            (&[(":method", "CONNECT"), BASE[2]], "CONNECT is not served"),
            (&[BASE[0], BASE[1], (":path", "")], "missing :path"),
        ];
        for (fields, want) in cases {
            assert_eq!(head(fields).unwrap_err(), *want, "{fields:?}");
        }
    }

    #[test]
    fn list_size_counts_32_bytes_of_overhead_per_field() {
        let mut head = RequestHead::new(16 * 1024);
        head.field(b"ab", b"cde");
        head.field(b"Bad", b"");
        assert_eq!(head.list_size(), 2 + 3 + 32 + 3 + 32);
    }

    #[test]
    fn fields_past_the_list_limit_are_counted_but_not_kept() {
        let mut head = RequestHead::new(1_000);
        for (n, v) in BASE {
            head.field(n.as_bytes(), v.as_bytes());
        }
        let big = vec![b'v'; 400];
        for _ in 0..1_000 {
            head.field(b"x-big", &big);
        }
        assert_eq!(head.list_size(), BASE.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>() + 1_000 * 437);
        assert!(head.headers.len() <= 2, "kept {} fields past the limit", head.headers.len());
        assert_eq!(head.finish().unwrap_err(), "header list larger than SETTINGS_MAX_HEADER_LIST_SIZE");
    }

    #[test]
    fn content_length_must_be_one_number() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), Ok(None));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(content_length(&h), Ok(Some(12)));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(content_length(&h), Ok(Some(12)));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("13"));
        assert_eq!(content_length(&h), Err("conflicting content-length values"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert_eq!(content_length(&h), Err("invalid content-length"));
    }

    /// Encoded blocks are read back with an HPACK decoder written by others.
    #[test]
    fn response_blocks_decode_with_an_independent_hpack_decoder() {
        for status in [200u16, 204, 304, 413, 500, 101, 299] {
            let mut resp = http::Response::builder().status(status);
            resp = resp.header("content-type", "application/octet-stream").header("connection", "close");
            resp = resp.header("x-long", "v".repeat(300));
            let (parts, ()) = resp.body(()).unwrap().into_parts();
            let mut block = Vec::new();
            encode_response(&parts, &mut block);
            let decoded = loona_hpack::Decoder::new().decode(&block).unwrap();
            let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
                (b":status".to_vec(), status.to_string().into_bytes()),
                (b"content-type".to_vec(), b"application/octet-stream".to_vec()),
                (b"x-long".to_vec(), "v".repeat(300).into_bytes()),
            ];
            assert_eq!(decoded, want, "status {status}");
        }
    }

    #[test]
    fn integers_use_continuation_bytes_past_the_prefix() {
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        encode_integer(1337, 5, 0, &mut out);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        encode_integer(10, 5, 0xe0, &mut out);
        assert_eq!(out, [0xea]);
    }
}
