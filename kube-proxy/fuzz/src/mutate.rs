//! The mutator: byte-level edits (flip, insert, delete, duplicate, splice a
//! dictionary token) for every target, and value-level edits of JSON
//! documents (replace a string, number or whole value with a hostile one,
//! drop a key, duplicate an item) for the object targets, so that most
//! inputs still parse and reach the code behind the parser.

use serde_json::Value;

use crate::rng::Rng;

/// Strings that break naive code: empty, huge, non-ASCII, quotes, control
/// characters, rule-text metacharacters, numbers where names go.
pub const HOSTILE_STRINGS: &[&str] = &[
    "",
    " ",
    "\"",
    "\\",
    "\n",
    "\0",
    "a\"b",
    "-j ACCEPT",
    "; flush ruleset",
    "}",
    "{",
    "#",
    "ümlaut",
    "🦀",
    "0",
    "-1",
    "65536",
    "4294967296",
    "18446744073709551616",
    "::",
    "::1",
    "0.0.0.0",
    "255.255.255.255",
    "10.0.0.1/33",
    "fe80::1%eth0",
    "1.2.3",
    "None",
    "ClusterIP",
    "NodePort",
    "LoadBalancer",
    "ExternalName",
    "Local",
    "Cluster",
    "ClientIP",
    "TCP",
    "UDP",
    "SCTP",
    "IPv4",
    "IPv6",
    "FQDN",
    "PreferClose",
    "PreferDualStack",
    "RequireDualStack",
    "SingleStack",
    "kubernetes.io/service-name",
    "service.kubernetes.io/headless",
    "service.kubernetes.io/service-proxy-name",
    "topology.kubernetes.io/zone",
    "iptables",
    "nftables",
    "ipvs",
    "userspace",
    "ClusterCIDR",
    "NodeCIDR",
    "primary",
    "1s",
    "0s",
    "-1s",
    "1h2m3.5s",
    "9999999999h",
    "kubeproxy.config.k8s.io/v1alpha1",
    "KubeProxyConfiguration",
];

fn long_string(rng: &mut Rng) -> String {
    let len = *rng.pick(&[63, 64, 128, 253, 254, 4096]).unwrap_or(&64);
    let c = *rng.pick(&['a', '-', '.', 'Z', '"', 'é']).unwrap_or(&'a');
    std::iter::repeat_n(c, len).collect()
}

fn hostile_string(rng: &mut Rng) -> String {
    if rng.one_in(8) {
        long_string(rng)
    } else {
        rng.pick(HOSTILE_STRINGS).copied().unwrap_or("").to_string()
    }
}

fn hostile_number(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::from(0),
        1 => Value::from(-1),
        2 => Value::from(65535),
        3 => Value::from(65536),
        4 => Value::from(i64::MAX),
        5 => Value::from(i64::MIN),
        6 => Value::from(u64::MAX),
        7 => serde_json::Number::from_f64(1.5).map_or(Value::Null, Value::Number),
        _ => Value::from(rng.below(70000) as i64),
    }
}

fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => hostile_number(rng),
        3 => Value::String(hostile_string(rng)),
        4 => Value::Array(Vec::new()),
        5 => Value::Object(serde_json::Map::new()),
        _ => Value::Array(vec![Value::String(hostile_string(rng))]),
    }
}

/// How many nodes `value` holds (itself included).
fn count(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count).sum(),
        Value::Object(map) => map.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies one value-level edit somewhere in `value`.
pub fn mutate_value(value: &mut Value, rng: &mut Rng) {
    let mut index = rng.below(count(value));
    let target = find_mut(value, &mut index);
    let Some(target) = target else { return };
    match target {
        Value::String(s) => {
            if rng.one_in(3) {
                s.push_str(&hostile_string(rng));
            } else {
                *s = hostile_string(rng);
            }
        }
        Value::Number(_) => *target = hostile_number(rng),
        Value::Array(items) => match rng.below(4) {
            0 if !items.is_empty() => {
                let i = rng.below(items.len());
                items.remove(i);
            }
            1 if !items.is_empty() => {
                let i = rng.below(items.len());
                let copy = items[i].clone();
                items.push(copy);
            }
            2 => items.push(hostile_value(rng)),
            _ => *target = hostile_value(rng),
        },
        Value::Object(map) => match rng.below(4) {
            0 if !map.is_empty() => {
                let key = map.keys().nth(rng.below(map.len())).cloned();
                if let Some(key) = key {
                    map.remove(&key);
                }
            }
            1 if !map.is_empty() => {
                let key = map.keys().nth(rng.below(map.len())).cloned();
                if let Some(key) = key {
                    map.insert(key, hostile_value(rng));
                }
            }
            2 => {
                map.insert(hostile_string(rng), hostile_value(rng));
            }
            _ => *target = hostile_value(rng),
        },
        _ => *target = hostile_value(rng),
    }
}

/// The `index`th node of `value` in pre-order, mutably.
fn find_mut<'a>(value: &'a mut Value, index: &mut usize) -> Option<&'a mut Value> {
    if *index == 0 {
        return Some(value);
    }
    *index -= 1;
    match value {
        Value::Array(items) => {
            for item in items {
                let size = count(item);
                if *index < size {
                    return find_mut(item, index);
                }
                *index -= size;
            }
            None
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                let size = count(item);
                if *index < size {
                    return find_mut(item, index);
                }
                *index -= size;
            }
            None
        }
        _ => None,
    }
}

/// Applies one byte-level edit to `data`, splicing tokens from `dict`.
pub fn mutate_bytes(data: &mut Vec<u8>, dict: &[&str], rng: &mut Rng) {
    let len = data.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        2 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            data.drain(start..end);
        }
        3 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(32)).min(len);
            let chunk = data[start..end].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        4 => {
            let at = rng.below(len + 1);
            let token = rng.pick(dict).copied().unwrap_or("");
            data.splice(at..at, token.bytes());
        }
        5 => {
            let at = rng.below(len + 1);
            let token = hostile_string(rng);
            data.splice(at..at, token.into_bytes());
        }
        6 if len > 0 => {
            // Replace a line with another line of the input.
            let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
            if lines.len() > 1 {
                let a = rng.below(lines.len());
                let b = rng.below(lines.len());
                let mut out: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
                out[a] = lines[b].to_vec();
                *data = out.join(&b'\n');
            }
        }
        _ => {
            let at = rng.below(len + 1);
            data.insert(
                at,
                *rng.pick(b"\n\t \"'\\:-{}[]#,0\x00\xff").unwrap_or(&b' '),
            );
        }
    }
}

/// A mutated copy of `seed`: 1–8 edits, value-level ones (when `json` and
/// the seed is JSON) re-serialised before any byte-level ones.
pub fn mutate(seed: &[u8], json: bool, dict: &[&str], rng: &mut Rng) -> Vec<u8> {
    let edits = 1 + rng.below(8);
    let mut data = seed.to_vec();
    let value_edits = if json { rng.below(edits + 1) } else { 0 };
    if value_edits > 0
        && let Ok(mut value) = serde_json::from_slice::<Value>(&data)
    {
        for _ in 0..value_edits {
            mutate_value(&mut value, rng);
        }
        if let Ok(text) = serde_json::to_vec(&value) {
            data = text;
        }
    }
    // Mostly value edits only, so that the result still parses.
    let byte_edits = if value_edits > 0 && !rng.one_in(4) {
        0
    } else {
        edits - value_edits.min(edits - 1)
    };
    for _ in 0..byte_edits {
        mutate_bytes(&mut data, dict, rng);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_edits_reach_every_node() {
        let seed = serde_json::json!({"a": [1, {"b": "c"}], "d": true});
        let mut rng = Rng::new(7);
        let mut changed = 0;
        for _ in 0..200 {
            let mut v = seed.clone();
            mutate_value(&mut v, &mut rng);
            if v != seed {
                changed += 1;
            }
        }
        assert!(
            changed > 150,
            "only {changed} of 200 edits changed the value"
        );
    }

    #[test]
    fn mutation_is_deterministic() {
        let seed = br#"{"kind": "Service"}"#;
        let a = mutate(seed, true, &["x"], &mut Rng::new(1));
        let b = mutate(seed, true, &["x"], &mut Rng::new(1));
        assert_eq!(a, b);
    }
}
