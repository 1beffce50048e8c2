//! Fast text for the hottest values (endpoint addresses), without the
//! formatting machinery.

use std::net::SocketAddr;

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `n % 10` is a digit.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// `ip:port`, `[ip]:port` for IPv6: what upstream hashes and DNATs to.
pub(super) fn socket_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => {
            let mut out = String::with_capacity(21);
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(&mut out, u32::from(octet));
            }
            out.push(':');
            push_decimal(&mut out, u32::from(v4.port()));
            out
        }
        SocketAddr::V6(_) => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_formatting() {
        for text in [
            "10.244.1.10:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[fd00::1]:80",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(socket_addr(addr), addr.to_string());
            assert_eq!(socket_addr(addr), text);
        }
    }
}
