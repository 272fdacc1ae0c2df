//! CIDR text, as results and IPAM configs carry it: `Cidr` parses or names the input in its error,
//! prints back to text that parses to the same value, and its network contains the address. IPAM's
//! `Subnet` reads the same text consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumb_cni::Cidr;
use plumb_fuzz::check_error;
use plumb_ipam::range::Subnet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<Cidr>() {
        Ok(c) => {
            let printed = c.to_string();
            assert_eq!(
                printed.parse::<Cidr>(),
                Ok(c),
                "{text:?} printed as {printed}"
            );
            assert!(c.network().contains(c.addr));
            assert!(c.contains(c.network().addr));
            assert_eq!(c.network().network(), c.network());
            assert!(c.prefix <= if c.is_ipv4() { 32 } else { 128 });
            // IPAM reads the same text into the same subnet.
            let s = Subnet::parse(text, "fuzz").expect("a CIDR is a subnet");
            assert_eq!((s.network, s.prefix), (c.network().addr, c.prefix));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match Subnet::parse(text, "fuzz") {
        Ok(s) => {
            assert!(s.first() <= s.last());
            assert!(s.contains(s.network));
            let again = Subnet::parse(&s.to_string(), "fuzz").unwrap();
            assert_eq!(again, s);
        }
        Err(e) => check_error(&e, &[plumb_cni::code::INVALID_CONFIG], "Subnet::parse"),
    }
});
