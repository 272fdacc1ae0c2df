//! nftables over raw netlink (`NETLINK_NETFILTER`, the nf_tables subsystem), without the `nft`
//! binary or libnftnl: the per-attachment chains plumb's plugins need.
//!
//! * [`Nft::add_spoofcheck`]: a netdev `ingress` base chain on one device that drops frames whose
//!   Ethernet source is not the attachment's MAC.
//! * [`Nft::add_masquerade`] / [`Nft::add_masquerade_out`]: an ip/ip6 `nat postrouting` base
//!   chain that masquerades an address (or a subnet leaving by one interface).
//! * [`Nft::delete_chain`], [`Nft::list_chains`], [`Nft::chain_exists`], [`Nft::ensure_table`],
//!   [`Nft::delete_table`], [`Nft::delete_table_if_empty`].
//!
//! Every change is one nfnetlink transaction (`NFNL_MSG_BATCH_BEGIN` … `END`), so a chain and its
//! rules appear together or not at all. Deletes are idempotent: a missing table or chain is
//! success. Kernel refusals come back as `io::Error`s whose message says what was being done,
//! and whose errno is available through [`errno`].
//!
//! A netlink socket acts in the network namespace it was opened in. To work in a container's
//! namespace, open the socket with [`open_socket`] on a thread inside it (a plugin uses its request's
//! `plumb_net::session::Session::run`, so it enters the namespace once) and hand it to
//! [`Nft::from_fd`], to be used from any thread. This crate never switches namespaces itself.

pub mod expr;
pub mod msg;
pub mod socket;
mod sys;

use expr::{Expr, Field};
use socket::{Batch, CommitError, Socket};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};
use sys::*;

pub use socket::{open as open_socket, NftError};

/// Priority of the spoof-check ingress chains (before anything else sees the frame).
pub const SPOOFCHECK_PRIORITY: i32 = -500;
/// Priority of the masquerade postrouting chains (`srcnat`).
pub const MASQUERADE_PRIORITY: i32 = 100;

/// Longest table or chain name the kernel accepts (`NFT_NAME_MAXLEN - 1`).
const NAME_MAX: usize = 255;

/// The address family of a table (an `NFPROTO_*` value on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `inet`: IPv4 and IPv6.
    Inet,
    /// `ip`: IPv4.
    Ip,
    /// `ip6`: IPv6.
    Ip6,
    /// `arp`.
    Arp,
    /// `bridge`.
    Bridge,
    /// `netdev`: per-device ingress/egress hooks.
    Netdev,
}

impl Family {
    /// The `NFPROTO_*` number.
    pub fn proto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    /// The name `nft` uses for the family.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The errno behind an error returned by this crate: the kernel's answer to a request, or the
/// OS error of a socket call. `None` for errors of ours (bad input, garbled reply).
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<NftError>())
            .map(|n| n.errno)
    })
}

/// A handle on nf_tables in one network namespace (that of its socket). Cheap to keep; safe to
/// share between threads (requests are serialized).
pub struct Nft {
    sock: Mutex<Socket>,
}

/// A base chain as the kernel wants it described.
struct BaseChain<'a> {
    family: Family,
    table: &'a str,
    name: &'a str,
    kind: &'static str,
    hook: u32,
    priority: i32,
    device: Option<&'a str>,
}

impl Nft {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Nft> {
        Nft::from_fd(open_socket()?)
    }

    /// Uses a `NETLINK_NETFILTER` socket opened elsewhere (see [`open_socket`]); it keeps acting
    /// in the namespace it was opened in.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Nft> {
        Ok(Nft {
            sock: Mutex::new(Socket::new(fd)?),
        })
    }

    fn sock(&self) -> MutexGuard<'_, Socket> {
        // A panic mid-request leaves at worst unread replies, which later requests skip.
        self.sock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates table `table` of `family` if it does not exist; an existing one is left as it is
    /// (not flushed).
    pub fn ensure_table(&self, family: Family, table: &str) -> io::Result<()> {
        check_name("table", table)?;
        let mut b = Batch::new();
        add_table(&mut b, family, table);
        self.commit(b)
    }

    /// Deletes table `table` of `family` with everything in it; a missing table is success.
    pub fn delete_table(&self, family: Family, table: &str) -> io::Result<()> {
        check_name("table", table)?;
        let mut b = Batch::new();
        b.add(
            format!("delete table {family} {table}"),
            NFT_MSG_DELTABLE,
            0,
            family.proto(),
            |a| {
                a.str(NFTA_TABLE_NAME, table);
            },
        );
        self.commit_absent_ok(b)
    }

    /// Deletes table `table` of `family` only if it holds nothing (no chain, set or object); returns
    /// whether the table is gone (deleted now, or absent). A table in use stays: `false`.
    ///
    /// Race-safe without a lock: the delete carries `NLM_F_NONREC`, so the kernel itself refuses it
    /// (`EBUSY`) when the table is not empty at commit time, and transactions are serialized, so a
    /// concurrent transaction that adds a chain (creating the table if needed) either comes first (the
    /// delete is refused) or after (it creates the table again). The chains are listed first, which
    /// skips the transaction when they are there (and keeps a table with chains on kernels older than
    /// 4.19, which ignore the flag).
    pub fn delete_table_if_empty(&self, family: Family, table: &str) -> io::Result<bool> {
        if !self.list_chains(family, table)?.is_empty() {
            return Ok(false);
        }
        let mut b = Batch::new();
        b.add(
            format!("delete table {family} {table} if empty"),
            NFT_MSG_DELTABLE,
            NLM_F_NONREC,
            family.proto(),
            |a| {
                a.str(NFTA_TABLE_NAME, table);
            },
        );
        match self.sock().commit(b) {
            Ok(()) => Ok(true),
            Err(CommitError::Rejected(errs)) if errs.iter().all(|e| e.errno == libc::ENOENT) => {
                Ok(true)
            }
            Err(CommitError::Rejected(errs)) if errs[0].errno == libc::EBUSY => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The names of the chains in table `table` of `family`; empty if there is no such table.
    pub fn list_chains(&self, family: Family, table: &str) -> io::Result<Vec<String>> {
        check_name("table", table)?;
        let what = format!("list chains {family} {table}");
        let replies = self
            .sock()
            .get(&what, NFT_MSG_GETCHAIN, family.proto(), true, |_| {})?;
        let mut names = Vec::new();
        for payload in &replies {
            let (mut in_table, mut name) = (false, None);
            for (ty, data) in msg::attrs(payload.get(NFGENMSG_LEN..).unwrap_or(&[])) {
                match ty {
                    NFTA_CHAIN_TABLE => in_table = msg::attr_str(data) == table,
                    NFTA_CHAIN_NAME => name = Some(msg::attr_str(data)),
                    _ => {}
                }
            }
            if let (true, Some(name)) = (in_table, name) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Whether table `table` of `family` has a chain named `chain`.
    pub fn chain_exists(&self, family: Family, table: &str, chain: &str) -> io::Result<bool> {
        check_name("table", table)?;
        check_name("chain", chain)?;
        let what = format!("get chain {family} {table} {chain}");
        let got = self
            .sock()
            .get(&what, NFT_MSG_GETCHAIN, family.proto(), false, |a| {
                a.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, chain);
            });
        match got {
            Ok(replies) => Ok(!replies.is_empty()),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes chain `chain` of table `table`: its rules, then the chain, in one transaction.
    /// A missing table or chain is success, and costs no transaction: a commit makes the kernel wait for
    /// an RCU grace period (milliseconds), a lookup does not, and DEL asks for chains that mostly do not
    /// exist (a config without macspoofchk or ipMasq).
    pub fn delete_chain(&self, family: Family, table: &str, chain: &str) -> io::Result<()> {
        if !self.chain_exists(family, table, chain)? {
            return Ok(());
        }
        let mut b = Batch::new();
        remove_chain(&mut b, family, table, chain);
        self.commit_absent_ok(b)
    }

    /// In one transaction: table `table` (netdev family, created if missing) gets base chain
    /// `chain` = `type filter hook ingress device <device> priority -500; policy accept;` holding
    /// the single rule `ether saddr != <mac> drop`.
    ///
    /// An existing chain of that name is replaced (in the same transaction), so repeating the
    /// call is harmless and a chain never ends up hooked on two devices. `device` must exist in
    /// the socket's namespace (kernels since 6.16 would otherwise accept any name and hook the
    /// chain whenever such a device appears).
    pub fn add_spoofcheck(
        &self,
        table: &str,
        chain: &str,
        device: &str,
        mac: [u8; 6],
    ) -> io::Result<()> {
        self.spoofcheck(table, chain, device, mac, false)
    }

    /// [`Nft::add_spoofcheck`] with a counter before the verdict:
    /// `ether saddr != <mac> counter drop`.
    pub fn add_spoofcheck_counted(
        &self,
        table: &str,
        chain: &str,
        device: &str,
        mac: [u8; 6],
    ) -> io::Result<()> {
        self.spoofcheck(table, chain, device, mac, true)
    }

    fn spoofcheck(
        &self,
        table: &str,
        chain: &str,
        device: &str,
        mac: [u8; 6],
        counter: bool,
    ) -> io::Result<()> {
        check_name("table", table)?;
        check_name("chain", chain)?;
        check_ifname(device)?;
        self.sock().ifindex(device)?;
        let mut rule = expr::ether_saddr_ne(mac);
        if counter {
            rule.push(Expr::Counter);
        }
        rule.push(Expr::Verdict(NF_DROP));
        let base = BaseChain {
            family: Family::Netdev,
            table,
            name: chain,
            kind: "filter",
            hook: NF_NETDEV_INGRESS,
            priority: SPOOFCHECK_PRIORITY,
            device: Some(device),
        };
        self.put_base_chain(&base, &[rule])
    }

    /// In one transaction: table `table` of `family` (`Ip` or `Ip6`, created if missing) gets
    /// base chain `chain` = `type nat hook postrouting priority 100; policy accept;` holding
    /// `ip saddr <src> ip daddr != <exclude_dst> masquerade` (`ip6` likewise).
    ///
    /// An existing chain of that name is replaced, as for [`Nft::add_spoofcheck`].
    pub fn add_masquerade(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        src: IpAddr,
        exclude_dst: (IpAddr, u8),
    ) -> io::Result<()> {
        let bits = check_ip_family(family, src)?;
        check_prefix(family, exclude_dst)?;
        let mut rule = expr::ip_match(Field::Source, src, bits, true);
        rule.extend(expr::ip_match(
            Field::Destination,
            exclude_dst.0,
            exclude_dst.1,
            false,
        ));
        rule.push(Expr::Masq);
        self.masquerade_chain(family, table, chain, rule)
    }

    /// Like [`Nft::add_masquerade`] for a router: the rule is
    /// `ip saddr <src_subnet> oifname "<out_ifname>" masquerade` (`ip6` likewise).
    pub fn add_masquerade_out(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        src_subnet: (IpAddr, u8),
        out_ifname: &str,
    ) -> io::Result<()> {
        check_prefix(family, src_subnet)?;
        check_ifname(out_ifname)?;
        let mut rule = expr::ip_match(Field::Source, src_subnet.0, src_subnet.1, true);
        rule.extend(expr::oifname_eq(out_ifname));
        rule.push(Expr::Masq);
        self.masquerade_chain(family, table, chain, rule)
    }

    fn masquerade_chain(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        rule: Vec<Expr>,
    ) -> io::Result<()> {
        check_name("table", table)?;
        check_name("chain", chain)?;
        let base = BaseChain {
            family,
            table,
            name: chain,
            kind: "nat",
            hook: NF_INET_POST_ROUTING,
            priority: MASQUERADE_PRIORITY,
            device: None,
        };
        self.put_base_chain(&base, &[rule])
    }

    /// One transaction: the table (created if missing), the old chain of that name if there is
    /// one (flushed and deleted), the new base chain, its `rules`. A chain appearing or vanishing
    /// between the existence check and the commit is retried once.
    fn put_base_chain(&self, c: &BaseChain, rules: &[Vec<Expr>]) -> io::Result<()> {
        let (family, table, name) = (c.family, c.table, c.name);
        let mut retried = false;
        loop {
            let mut b = Batch::new();
            add_table(&mut b, family, table);
            if self.chain_exists(family, table, name)? {
                remove_chain(&mut b, family, table, name);
            }
            b.add(
                format!("add chain {family} {table} {name}"),
                NFT_MSG_NEWCHAIN,
                NLM_F_CREATE | NLM_F_EXCL,
                family.proto(),
                |a| {
                    a.str(NFTA_CHAIN_TABLE, table)
                        .str(NFTA_CHAIN_NAME, name)
                        .nest(NFTA_CHAIN_HOOK, |h| {
                            h.be32(NFTA_HOOK_HOOKNUM, c.hook)
                                .be32(NFTA_HOOK_PRIORITY, c.priority as u32);
                            if let Some(dev) = c.device {
                                h.str(NFTA_HOOK_DEV, dev);
                            }
                        })
                        .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
                        .str(NFTA_CHAIN_TYPE, c.kind);
                },
            );
            for rule in rules {
                b.add(
                    format!("add rule {family} {table} {name}"),
                    NFT_MSG_NEWRULE,
                    NLM_F_CREATE | NLM_F_APPEND,
                    family.proto(),
                    |a| {
                        a.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, name);
                        expr::encode_rule(rule, a);
                    },
                );
            }
            match self.sock().commit(b) {
                Err(CommitError::Rejected(errs))
                    if !retried && [libc::ENOENT, libc::EEXIST].contains(&errs[0].errno) =>
                {
                    retried = true;
                }
                r => return Ok(r?),
            }
        }
    }

    fn commit(&self, b: Batch) -> io::Result<()> {
        Ok(self.sock().commit(b)?)
    }

    /// Commits a deletion; a transaction refused only because its objects are absent is success
    /// (nothing was there to delete).
    fn commit_absent_ok(&self, b: Batch) -> io::Result<()> {
        match self.sock().commit(b) {
            Err(CommitError::Rejected(errs)) if errs.iter().all(|e| e.errno == libc::ENOENT) => {
                Ok(())
            }
            r => Ok(r?),
        }
    }
}

/// `NFT_MSG_NEWTABLE` with `NLM_F_CREATE` (no `NLM_F_EXCL`): creates, or leaves as is.
fn add_table(b: &mut Batch, family: Family, table: &str) {
    b.add(
        format!("add table {family} {table}"),
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        family.proto(),
        |a| {
            a.str(NFTA_TABLE_NAME, table);
        },
    );
}

/// Flushes then deletes a chain: `NFT_MSG_DELRULE` naming the chain but no rule handle (all
/// its rules), then `NFT_MSG_DELCHAIN`.
fn remove_chain(b: &mut Batch, family: Family, table: &str, chain: &str) {
    b.add(
        format!("flush chain {family} {table} {chain}"),
        NFT_MSG_DELRULE,
        0,
        family.proto(),
        |a| {
            a.str(NFTA_RULE_TABLE, table).str(NFTA_RULE_CHAIN, chain);
        },
    );
    b.add(
        format!("delete chain {family} {table} {chain}"),
        NFT_MSG_DELCHAIN,
        0,
        family.proto(),
        |a| {
            a.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, chain);
        },
    );
}

fn check_name(kind: &str, name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains('\0') {
        return Err(socket::invalid(format!(
            "{kind} name {name:?} must be 1 to {NAME_MAX} bytes without NUL"
        )));
    }
    Ok(())
}

fn check_ifname(name: &str) -> io::Result<()> {
    if name.is_empty()
        || name.len() >= IFNAMSIZ
        || name.contains(['\0', '/'])
        || name.trim() != name
    {
        return Err(socket::invalid(format!(
            "interface name {name:?} must be 1 to {} bytes without NUL, '/' or spaces",
            IFNAMSIZ - 1
        )));
    }
    Ok(())
}

/// Checks that `addr` belongs to `family` (`Ip` or `Ip6`); returns the address length in bits.
fn check_ip_family(family: Family, addr: IpAddr) -> io::Result<u8> {
    match (family, addr) {
        (Family::Ip, IpAddr::V4(_)) => Ok(32),
        (Family::Ip6, IpAddr::V6(_)) => Ok(128),
        (Family::Ip | Family::Ip6, _) => Err(socket::invalid(format!(
            "address {addr} does not belong to family {family}"
        ))),
        _ => Err(socket::invalid(format!(
            "masquerade chains are for families ip and ip6, not {family}"
        ))),
    }
}

fn check_prefix(family: Family, (addr, len): (IpAddr, u8)) -> io::Result<()> {
    let bits = check_ip_family(family, addr)?;
    if len > bits {
        return Err(socket::invalid(format!(
            "prefix length {len} of {addr} is longer than {bits}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_match_nfproto_numbers_and_nft_names() {
        assert_eq!(Family::Netdev.proto(), 5);
        assert_eq!(Family::Ip6.proto(), 10);
        assert_eq!(Family::Ip.to_string(), "ip");
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_sent() {
        assert!(check_name("chain", "").is_err());
        assert!(check_name("chain", &"x".repeat(256)).is_err());
        assert!(check_name("chain", &"x".repeat(255)).is_ok());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("0123456789abcde").is_ok());
        assert!(check_ifname("a/b").is_err());
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(check_ip_family(Family::Ip, v4).unwrap(), 32);
        assert!(check_ip_family(Family::Ip, v6).is_err());
        assert!(check_ip_family(Family::Netdev, v4).is_err());
        assert!(check_prefix(Family::Ip6, (v6, 129)).is_err());
        let e = check_prefix(Family::Ip, (v4, 33)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(errno(&e), None);
    }
}
