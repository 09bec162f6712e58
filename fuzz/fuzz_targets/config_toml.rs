//! A configuration file: parsed and validated, then every account's table checked by its
//! connector, as `passerelle check` does. Bad input must come back as issues naming a key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle::{config, registry};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::from_toml_str(text) {
        Ok(parsed) => {
            let (built, _issues) = registry::build_all(&parsed);
            let _ = registry::check_rooms(&parsed, &built);
        }
        Err(issues) => assert!(!issues.is_empty()),
    }
});
