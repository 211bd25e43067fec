//! The resource kinds the test API server serves (group, version, plural, kind, scope). It owns
//! nothing else: objects live in `store`, paths are parsed in `http`.

/// One served resource, e.g. core/v1 `services` or `discovery.k8s.io/v1` `endpointslices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// API group; `""` for the core group (served under `/api/v1`).
    pub group: &'static str,
    /// API version inside the group.
    pub version: &'static str,
    /// URL segment (`services`).
    pub plural: &'static str,
    /// Singular name for discovery (`service`).
    pub singular: &'static str,
    /// `kind` of one object (`Service`); lists are `<kind>List`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

/// Everything kube-proxy (and so kubenat) reads, plus namespaces.
pub const RESOURCES: &[Resource] = &[
    core("services", "service", "Service", true),
    core("endpoints", "endpoints", "Endpoints", true),
    core("nodes", "node", "Node", false),
    core("namespaces", "namespace", "Namespace", false),
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
    },
];

const fn core(plural: &'static str, singular: &'static str, kind: &'static str, namespaced: bool) -> Resource {
    Resource { group: "", version: "v1", plural, singular, kind, namespaced }
}

impl Resource {
    /// `v1` or `discovery.k8s.io/v1`.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// `ServiceList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// How the apiserver names the resource in messages: `services`, `endpointslices.discovery.k8s.io`.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The resource for an object's `kind` (and `apiVersion`, when given).
    pub fn by_kind(kind: &str, api_version: Option<&str>) -> Option<Resource> {
        RESOURCES
            .iter()
            .find(|r| {
                (r.kind.eq_ignore_ascii_case(kind) || r.plural == kind)
                    && api_version.is_none_or(|v| v == r.api_version())
            })
            .copied()
    }

    /// The resource served at `/api/v1/<plural>` (group `""`) or `/apis/<group>/<version>/<plural>`.
    pub fn by_path(group: &str, version: &str, plural: &str) -> Option<Resource> {
        RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural).copied()
    }

    /// All served resources of one group/version.
    pub fn in_group_version<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static Resource> + 'a {
        RESOURCES.iter().filter(move |r| r.group == group && r.version == version)
    }
}

/// `v1` for the core group, `group/version` otherwise.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}
