//! Rule texts for tracer tests. Node 192.168.1.10, pods 10.244.0.0/16, mark 0x4000.
//! `default/web:http`: ClusterIP 10.96.100.10:80, NodePort 30080, endpoints 10.244.1.5,
//! 10.244.2.7, 10.244.3.9 (port 8080). `default/db`: 10.96.200.20:5432, no endpoints.

/// Reference section 2.6, verbatim: what `iptables-save` prints.
pub const SAVE: &str = include_str!("../../../../fixtures/dumps/reference-2.6.save");

/// The same rules as kube-proxy feeds them to `iptables-restore`: no built-in chains or jumps.
pub const RESTORE: &str = include_str!("../../../../fixtures/dumps/reference-2.6.restore");

/// Static rules plus three services, restore form:
/// - `default/lb:http`: LB IP 5.6.7.8:80, NodePort 30081, source range 203.0.113.0/25,
///   endpoint 10.244.1.5:8080 (eTP=Cluster).
/// - `default/local:http`: NodePort 30082, eTP=Local, endpoints 10.244.1.5:8080 (local) and
///   10.244.2.7:8080; cluster IP 10.96.0.50:80.
/// - `default/sticky:http`: ClusterIP 10.96.0.60:80, ClientIP affinity, endpoints 10.244.1.5:80
///   and 10.244.2.7:80.
pub const FEATURES: &str = r#"
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "default/lb:http traffic not accepted by KUBE-FW-LB" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-FW-LB - [0:0]
:KUBE-EXT-LB - [0:0]
:KUBE-SVC-LB - [0:0]
:KUBE-SEP-LB1 - [0:0]
:KUBE-EXT-LOCAL - [0:0]
:KUBE-SVC-LOCAL - [0:0]
:KUBE-SVL-LOCAL - [0:0]
:KUBE-SEP-LOCAL1 - [0:0]
:KUBE-SEP-LOCAL2 - [0:0]
:KUBE-SVC-STICKY - [0:0]
:KUBE-SEP-STICKY1 - [0:0]
:KUBE-SEP-STICKY2 - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-NODEPORTS -m comment --comment default/lb:http -m tcp -p tcp --dport 30081 -j KUBE-EXT-LB
-A KUBE-NODEPORTS -m comment --comment default/local:http -m tcp -p tcp --dport 30082 -j KUBE-EXT-LOCAL
-A KUBE-SERVICES -m comment --comment "default/lb:http loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-LB
-A KUBE-SERVICES -m comment --comment "default/local:http cluster IP" -m tcp -p tcp -d 10.96.0.50 --dport 80 -j KUBE-SVC-LOCAL
-A KUBE-SERVICES -m comment --comment "default/sticky:http cluster IP" -m tcp -p tcp -d 10.96.0.60 --dport 80 -j KUBE-SVC-STICKY
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-FW-LB -m comment --comment "default/lb:http loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-LB
-A KUBE-FW-LB -m comment --comment "other traffic to default/lb:http will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-EXT-LB -m comment --comment "masquerade traffic for default/lb:http external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-LB -j KUBE-SVC-LB
-A KUBE-SVC-LB -m comment --comment "default/lb:http -> 10.244.1.5:8080" -j KUBE-SEP-LB1
-A KUBE-SEP-LB1 -m comment --comment default/lb:http -s 10.244.1.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-LB1 -m comment --comment default/lb:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-EXT-LOCAL -m comment --comment "pod traffic for default/local:http external destinations" -s 10.244.0.0/16 -j KUBE-SVC-LOCAL
-A KUBE-EXT-LOCAL -m comment --comment "masquerade LOCAL traffic for default/local:http external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-LOCAL -m comment --comment "route LOCAL traffic for default/local:http external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-LOCAL
-A KUBE-EXT-LOCAL -j KUBE-SVL-LOCAL
-A KUBE-SVC-LOCAL -m comment --comment "default/local:http cluster IP" -m tcp -p tcp -d 10.96.0.50 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-LOCAL -m comment --comment "default/local:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-LOCAL1
-A KUBE-SVC-LOCAL -m comment --comment "default/local:http -> 10.244.2.7:8080" -j KUBE-SEP-LOCAL2
-A KUBE-SVL-LOCAL -m comment --comment "default/local:http -> 10.244.1.5:8080" -j KUBE-SEP-LOCAL1
-A KUBE-SEP-LOCAL1 -m comment --comment default/local:http -s 10.244.1.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-LOCAL1 -m comment --comment default/local:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SEP-LOCAL2 -m comment --comment default/local:http -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-LOCAL2 -m comment --comment default/local:http -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080
-A KUBE-SVC-STICKY -m comment --comment "default/sticky:http -> 10.244.1.5:80" -m recent --name KUBE-SEP-STICKY1 --rcheck --seconds 10800 --reap -j KUBE-SEP-STICKY1
-A KUBE-SVC-STICKY -m comment --comment "default/sticky:http -> 10.244.2.7:80" -m recent --name KUBE-SEP-STICKY2 --rcheck --seconds 10800 --reap -j KUBE-SEP-STICKY2
-A KUBE-SVC-STICKY -m comment --comment "default/sticky:http -> 10.244.1.5:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-STICKY1
-A KUBE-SVC-STICKY -m comment --comment "default/sticky:http -> 10.244.2.7:80" -j KUBE-SEP-STICKY2
-A KUBE-SEP-STICKY1 -m comment --comment default/sticky:http -s 10.244.1.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-STICKY1 -m comment --comment default/sticky:http -m recent --name KUBE-SEP-STICKY1 --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:80
-A KUBE-SEP-STICKY2 -m comment --comment default/sticky:http -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-STICKY2 -m comment --comment default/sticky:http -m recent --name KUBE-SEP-STICKY2 --set -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:80
COMMIT
"#;
