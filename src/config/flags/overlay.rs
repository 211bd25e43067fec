//! Given flags written over a defaulted configuration, as kube-proxy does. Without `--config`
//! kube-proxy parses its flags into the already defaulted configuration (a flag wins, a flag's
//! zero is kept). With `--config` the file replaces the flags wholesale: only explicitly given
//! logging flags and a non-empty `--hostname-override` are applied over it; every other flag
//! that has a configuration field is ignored (kubenat names them in a warning instead of
//! ignoring them silently). Flags without a configuration field (`--master`, kubenat's own)
//! are read directly by their users.

use super::super::defaults::{self, HEALTHZ_PORT, METRICS_PORT};
use super::super::types::KubeProxyConfiguration;
use super::super::Error;
use super::{parse_feature_gates, KubeProxyFlags};

fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
    if let Some(value) = flag {
        *field = value.clone();
    }
}

fn set_some<T: Clone>(field: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        field.clone_from(flag);
    }
}

impl KubeProxyFlags {
    /// Writes the given flags that apply into `c` (already defaulted); returns the flags
    /// ignored because a configuration file was given.
    pub fn overlay(&self, c: &mut KubeProxyConfiguration) -> Result<Vec<&'static str>, Error> {
        if let Some(name) = self.hostname_override.as_ref().filter(|n| !n.trim().is_empty()) {
            c.hostname_override.clone_from(name);
        }
        self.overlay_logging(c)?;
        // kubenat's own setting: no kube-proxy meaning, so it applies with a file too.
        set_some(&mut c.iptables.services_dispatch, &self.services_dispatch);
        if self.config.is_some() {
            return Ok(self.config_field_flags());
        }
        set(&mut c.hostname_override, &self.hostname_override);
        set(&mut c.bind_address, &self.bind_address.map(|ip| ip.to_string()));
        self.overlay_addresses(c);
        set(&mut c.bind_address_hard_fail, &self.bind_address_hard_fail);
        set(&mut c.enable_profiling, &self.profiling);
        set(&mut c.show_hidden_metrics_for_version, &self.show_hidden_metrics_for_version);
        let gates = parse_feature_gates(&self.feature_gates)
            .map_err(|reason| Error::Flag { flag: "--feature-gates", reason })?;
        c.feature_gates.extend(gates);
        set(&mut c.client_connection.kubeconfig, &self.kubeconfig.as_ref().map(|p| p.display().to_string()));
        set(&mut c.client_connection.content_type, &self.kube_api_content_type);
        set(&mut c.client_connection.qps, &self.kube_api_qps);
        set(&mut c.client_connection.burst, &self.kube_api_burst);
        set(&mut c.config_sync_period, &self.config_sync_period);
        set(&mut c.mode, &self.proxy_mode);
        set(&mut c.cluster_cidr, &self.cluster_cidr);
        set(&mut c.detect_local_mode, &self.detect_local_mode);
        set(&mut c.detect_local.bridge_interface, &self.pod_bridge_interface);
        set(&mut c.detect_local.interface_name_prefix, &self.pod_interface_name_prefix);
        set(&mut c.node_port_addresses, &self.nodeport_addresses);
        set(&mut c.port_range, &self.proxy_port_range);
        set(&mut c.windows_run_as_service, &self.windows_service);
        set(&mut c.winkernel.source_vip, &self.source_vip);
        set(&mut c.winkernel.network_name, &self.network_name);
        set(&mut c.winkernel.enable_dsr, &self.enable_dsr);
        set(&mut c.winkernel.root_hns_endpoint_name, &self.root_hns_endpoint_name);
        set(&mut c.winkernel.forward_health_check_vip, &self.forward_health_check_vip);
        set_some(&mut c.oom_score_adj, &self.oom_score_adj);
        self.overlay_modes(c);
        self.overlay_conntrack(c);
        Ok(Vec::new())
    }

    /// The given flags that set a configuration field (other than logging and the host name).
    fn config_field_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--bind-address", self.bind_address.is_some()),
            ("--healthz-bind-address", self.healthz_bind_address.is_some()),
            ("--metrics-bind-address", self.metrics_bind_address.is_some()),
            ("--healthz-port", self.healthz_port.is_some()),
            ("--metrics-port", self.metrics_port.is_some()),
            ("--bind-address-hard-fail", self.bind_address_hard_fail.is_some()),
            ("--profiling", self.profiling.is_some()),
            ("--show-hidden-metrics-for-version", self.show_hidden_metrics_for_version.is_some()),
            ("--feature-gates", !self.feature_gates.is_empty()),
            ("--kubeconfig", self.kubeconfig.is_some()),
            ("--kube-api-content-type", self.kube_api_content_type.is_some()),
            ("--kube-api-qps", self.kube_api_qps.is_some()),
            ("--kube-api-burst", self.kube_api_burst.is_some()),
            ("--config-sync-period", self.config_sync_period.is_some()),
            ("--proxy-mode", self.proxy_mode.is_some()),
            ("--cluster-cidr", self.cluster_cidr.is_some()),
            ("--detect-local-mode", self.detect_local_mode.is_some()),
            ("--pod-bridge-interface", self.pod_bridge_interface.is_some()),
            ("--pod-interface-name-prefix", self.pod_interface_name_prefix.is_some()),
            ("--nodeport-addresses", self.nodeport_addresses.is_some()),
            ("--masquerade-all", self.masquerade_all.is_some()),
            ("--iptables-masquerade-bit", self.iptables_masquerade_bit.is_some()),
            ("--iptables-sync-period", self.iptables_sync_period.is_some()),
            ("--iptables-min-sync-period", self.iptables_min_sync_period.is_some()),
            ("--iptables-localhost-nodeports", self.iptables_localhost_nodeports.is_some()),
            ("--ipvs-sync-period", self.ipvs_sync_period.is_some()),
            ("--ipvs-min-sync-period", self.ipvs_min_sync_period.is_some()),
            ("--ipvs-scheduler", self.ipvs_scheduler.is_some()),
            ("--ipvs-exclude-cidrs", self.ipvs_exclude_cidrs.is_some()),
            ("--ipvs-strict-arp", self.ipvs_strict_arp.is_some()),
            ("--ipvs-tcp-timeout", self.ipvs_tcp_timeout.is_some()),
            ("--ipvs-tcpfin-timeout", self.ipvs_tcpfin_timeout.is_some()),
            ("--ipvs-udp-timeout", self.ipvs_udp_timeout.is_some()),
            ("--conntrack-max-per-core", self.conntrack_max_per_core.is_some()),
            ("--conntrack-min", self.conntrack_min.is_some()),
            ("--conntrack-tcp-timeout-established", self.conntrack_tcp_timeout_established.is_some()),
            ("--conntrack-tcp-timeout-close-wait", self.conntrack_tcp_timeout_close_wait.is_some()),
            ("--conntrack-tcp-be-liberal", self.conntrack_tcp_be_liberal.is_some()),
            ("--conntrack-udp-timeout", self.conntrack_udp_timeout.is_some()),
            ("--conntrack-udp-timeout-stream", self.conntrack_udp_timeout_stream.is_some()),
            ("--oom-score-adj", self.oom_score_adj.is_some()),
            ("--proxy-port-range", self.proxy_port_range.is_some()),
            ("--windows-service", self.windows_service.is_some()),
            ("--source-vip", self.source_vip.is_some()),
            ("--network-name", self.network_name.is_some()),
            ("--enable-dsr", self.enable_dsr.is_some()),
            ("--root-hnsendpoint-name", self.root_hns_endpoint_name.is_some()),
            ("--forward-healthcheck-vip", self.forward_health_check_vip.is_some()),
        ];
        given.iter().filter(|(_, given)| *given).map(|(name, _)| *name).collect()
    }

    /// Bind addresses and the deprecated port flags: an `IP` gets the port flag's (or the
    /// default) port, port 0 disables the server, an empty address disables it.
    fn overlay_addresses(&self, c: &mut KubeProxyConfiguration) {
        let address = |flag: &Option<String>, port: Option<i32>, current: &str, default_port: u16| {
            let port_u16 = port.and_then(|p| u16::try_from(p).ok());
            let mut value = match flag {
                Some(text) if text.trim().is_empty() => return String::new(),
                Some(text) => defaults::with_default_port(text, "0.0.0.0", port_u16.unwrap_or(default_port)),
                None => current.to_string(),
            };
            if port == Some(0) {
                value.clear();
            }
            value
        };
        c.healthz_bind_address =
            address(&self.healthz_bind_address, self.healthz_port, &c.healthz_bind_address, HEALTHZ_PORT);
        c.metrics_bind_address =
            address(&self.metrics_bind_address, self.metrics_port, &c.metrics_bind_address, METRICS_PORT);
    }

    fn overlay_modes(&self, c: &mut KubeProxyConfiguration) {
        let ipt = &mut c.iptables;
        set(&mut ipt.masquerade_all, &self.masquerade_all);
        set_some(&mut ipt.masquerade_bit, &self.iptables_masquerade_bit);
        set(&mut ipt.sync_period, &self.iptables_sync_period);
        set(&mut ipt.min_sync_period, &self.iptables_min_sync_period);
        set_some(&mut ipt.localhost_node_ports, &self.iptables_localhost_nodeports);
        // kube-proxy's --masquerade-all, --iptables-masquerade-bit and sync periods also set
        // the nftables section.
        let nft = &mut c.nftables;
        set(&mut nft.masquerade_all, &self.masquerade_all);
        set_some(&mut nft.masquerade_bit, &self.iptables_masquerade_bit);
        set(&mut nft.sync_period, &self.iptables_sync_period);
        set(&mut nft.min_sync_period, &self.iptables_min_sync_period);
        let ipvs = &mut c.ipvs;
        set(&mut ipvs.sync_period, &self.ipvs_sync_period);
        set(&mut ipvs.min_sync_period, &self.ipvs_min_sync_period);
        set(&mut ipvs.scheduler, &self.ipvs_scheduler);
        set(&mut ipvs.exclude_cidrs, &self.ipvs_exclude_cidrs);
        set(&mut ipvs.strict_arp, &self.ipvs_strict_arp);
        set(&mut ipvs.tcp_timeout, &self.ipvs_tcp_timeout);
        set(&mut ipvs.tcp_fin_timeout, &self.ipvs_tcpfin_timeout);
        set(&mut ipvs.udp_timeout, &self.ipvs_udp_timeout);
    }

    fn overlay_conntrack(&self, c: &mut KubeProxyConfiguration) {
        let ct = &mut c.conntrack;
        set_some(&mut ct.max_per_core, &self.conntrack_max_per_core);
        set_some(&mut ct.min, &self.conntrack_min);
        set_some(&mut ct.tcp_established_timeout, &self.conntrack_tcp_timeout_established);
        set_some(&mut ct.tcp_close_wait_timeout, &self.conntrack_tcp_timeout_close_wait);
        set(&mut ct.tcp_be_liberal, &self.conntrack_tcp_be_liberal);
        set(&mut ct.udp_timeout, &self.conntrack_udp_timeout);
        set(&mut ct.udp_stream_timeout, &self.conntrack_udp_timeout_stream);
    }

    fn overlay_logging(&self, c: &mut KubeProxyConfiguration) -> Result<(), Error> {
        let log = &mut c.logging;
        set(&mut log.verbosity, &self.verbosity);
        set(&mut log.format, &self.logging_format);
        set(&mut log.flush_frequency.0, &self.log_flush_frequency);
        for (format, split, buffer) in [
            ("json", self.log_json_split_stream, &self.log_json_info_buffer_size),
            ("text", self.log_text_split_stream, &self.log_text_info_buffer_size),
        ] {
            if split.is_none() && buffer.is_none() {
                continue;
            }
            let entry = log.options.entry(format.to_string()).or_insert_with(|| serde_json::json!({}));
            if let Some(map) = entry.as_object_mut() {
                if let Some(split) = split {
                    map.insert("splitStream".into(), split.into());
                }
                if let Some(size) = buffer {
                    map.insert("infoBufferSize".into(), size.clone().into());
                }
            }
        }
        if let Some(vmodule) = &self.vmodule {
            let items = super::parse_vmodule(vmodule).map_err(|reason| Error::Flag { flag: "--vmodule", reason })?;
            log.vmodule = items
                .into_iter()
                .map(|(file_pattern, verbosity)| super::super::types::VModuleItem { file_pattern, verbosity })
                .collect();
        }
        Ok(())
    }
}
