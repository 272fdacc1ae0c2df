//! Kernel constants this crate uses, copied by value from the uapi headers
//! `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`, `linux/netfilter.h` and
//! `linux/netlink.h`. Only the few values actually used are listed.

// linux/netlink.h
/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// Marks an attribute as containing nested attributes.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// Marks an attribute's payload as network byte order (informational).
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
/// Masks the flag bits off an attribute type.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
/// Error message (or ACK when `error == 0`).
pub const NLMSG_ERROR: u16 = 2;
/// End of a multipart (dump) reply.
pub const NLMSG_DONE: u16 = 3;
/// Request flag.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Ask for an ACK even on success.
pub const NLM_F_ACK: u16 = 0x4;
/// The dump was interrupted by a concurrent change and is inconsistent.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// Dump everything (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x100 | 0x200;
/// With `NLM_F_CREATE`: fail with `EEXIST` if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// Delete request: do not delete recursively (refuse, `EBUSY`, when the object is not empty).
pub const NLM_F_NONREC: u16 = 0x100;
/// Append (used for rules: add at the end of the chain).
pub const NLM_F_APPEND: u16 = 0x800;
/// In an error message: the echoed request was capped to its header.
pub const NLM_F_CAPPED: u16 = 0x100;
/// In an error message: extended-ACK TLVs follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// Extended-ACK attribute: human-readable error message.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

// linux/netfilter/nfnetlink.h
/// Size of `struct nfgenmsg`.
pub const NFGENMSG_LEN: usize = 4;
/// `nfgenmsg.version`.
pub const NFNETLINK_V0: u8 = 0;
/// The nf_tables subsystem id (high byte of the message type; `res_id` of a batch).
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// Start of a transaction (`NLMSG_MIN_TYPE`).
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// End (commit) of a transaction.
pub const NFNL_MSG_BATCH_END: u16 = 0x11;

// linux/netfilter/nf_tables.h: message types (low byte)
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_DELRULE: u16 = 8;

// enum nft_list_attributes
pub const NFTA_LIST_ELEM: u16 = 1;

// enum nft_hook_attributes
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_HOOK_DEV: u16 = 3;

// enum nft_table_attributes
pub const NFTA_TABLE_NAME: u16 = 1;

// enum nft_chain_attributes
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;

// enum nft_rule_attributes
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;

// enum nft_expr_attributes
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;

// enum nft_data_attributes
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;

// enum nft_verdict_attributes
pub const NFTA_VERDICT_CODE: u16 = 1;

// enum nft_immediate_attributes
pub const NFTA_IMMEDIATE_DREG: u16 = 1;
pub const NFTA_IMMEDIATE_DATA: u16 = 2;

// enum nft_bitwise_attributes
pub const NFTA_BITWISE_SREG: u16 = 1;
pub const NFTA_BITWISE_DREG: u16 = 2;
pub const NFTA_BITWISE_LEN: u16 = 3;
pub const NFTA_BITWISE_MASK: u16 = 4;
pub const NFTA_BITWISE_XOR: u16 = 5;

// enum nft_cmp_attributes and enum nft_cmp_ops
pub const NFTA_CMP_SREG: u16 = 1;
pub const NFTA_CMP_OP: u16 = 2;
pub const NFTA_CMP_DATA: u16 = 3;
pub const NFT_CMP_EQ: u32 = 0;
pub const NFT_CMP_NEQ: u32 = 1;

// enum nft_payload_attributes and enum nft_payload_bases
pub const NFTA_PAYLOAD_DREG: u16 = 1;
pub const NFTA_PAYLOAD_BASE: u16 = 2;
pub const NFTA_PAYLOAD_OFFSET: u16 = 3;
pub const NFTA_PAYLOAD_LEN: u16 = 4;
pub const NFT_PAYLOAD_LL_HEADER: u32 = 0;
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;

// enum nft_meta_attributes and enum nft_meta_keys
pub const NFTA_META_DREG: u16 = 1;
pub const NFTA_META_KEY: u16 = 2;
pub const NFT_META_OIFNAME: u32 = 7;
pub const NFT_META_IIFTYPE: u32 = 8;

// enum nft_registers
pub const NFT_REG_VERDICT: u32 = 0;
pub const NFT_REG_1: u32 = 1;

// linux/netfilter.h
pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;
/// `NF_NETDEV_INGRESS`.
pub const NF_NETDEV_INGRESS: u32 = 0;
/// `NF_INET_POST_ROUTING`.
pub const NF_INET_POST_ROUTING: u32 = 4;

// linux/if_arp.h
/// `ARPHRD_ETHER`: the device type `meta iiftype ether` matches.
pub const ARPHRD_ETHER: u16 = 1;

// linux/if.h
/// `IFNAMSIZ`, including the terminating NUL.
pub const IFNAMSIZ: usize = 16;
