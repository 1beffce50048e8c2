//! Examples of embedding `proxy-core`; see the binaries in `src/bin/`.
