/*
 * tables.c — the keys of the configuration file, one table per mapping,
 * the top level included: type, default, range, whether a reload may
 * change it (restart) and the line the reference shows for it.
 */
#include "config/schema.h"
#include "common/limits.h"

#include <stddef.h>
#include <string.h>

_Static_assert(sizeof(enum log_level) == sizeof(int), "log level stored as int");
_Static_assert(sizeof(enum log_format) == sizeof(int), "log format stored as int");
_Static_assert(sizeof(enum config_on_max_wait) == sizeof(int), "on_max_wait stored as int");
_Static_assert(sizeof(enum config_conflicts) == sizeof(int), "conflicts stored as int");
_Static_assert(sizeof(enum plan_priority) == sizeof(int), "priority stored as int");
_Static_assert(sizeof(enum config_precision) == sizeof(int), "precision stored as int");

static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const on_max_wait_names[] = {"process", "discard", NULL};
static const char *const conflicts_names[] = {"refuse", "quarantine", NULL};
static const char *const precision_names[] = {"fp32", "fp16", "bf16", NULL};

/* ---- TLS (node.tls, destinations.NAME.tls; checked in tls.c) ---- */

_Static_assert(sizeof(enum config_verify_client) == sizeof(int), "verify_client stored as int");
static const char *const verify_client_names[] = {"required", "optional", "off", NULL};

#define NODE_TLS_OFF(m) offsetof(struct config_node_tls, m)
#define DEST_TLS_OFF(m) offsetof(struct config_destination_tls, m)

static const struct schema_field node_tls_fields[] = {
    {.key = "port", .restart = 1, .type = T_INT, .required = 1, .min = 1, .max = 65535,
     .off = NODE_TLS_OFF(port), .doc = "TCP port of the TLS listener; not node.port"},
    {.key = "certificate", .restart = 1, .type = T_PATH, .required = 1,
     .off = NODE_TLS_OFF(certificate), .doc = "this node's certificate (PEM)"},
    {.key = "private_key", .restart = 1, .type = T_PATH, .required = 1,
     .off = NODE_TLS_OFF(private_key), .doc = "its private key (PEM, not encrypted)"},
    {.key = "ca_certificates", .restart = 1, .type = T_PATH, .off = NODE_TLS_OFF(ca_certificates),
     .doc = "CA certificates (PEM) a caller's certificate must chain to; required unless "
            "verify_client is off"},
    {.key = "verify_client", .restart = 1, .type = T_ENUM,
     .def_int = CONFIG_VERIFY_CLIENT_REQUIRED, .names = verify_client_names,
     .off = NODE_TLS_OFF(verify_client),
     .doc = "required: callers must present a trusted certificate; optional: one they present "
            "must be trusted; off: not checked"},
    {.key = "callers_match_certificate", .restart = 1, .type = T_BOOL, .def_int = 0,
     .off = NODE_TLS_OFF(callers_match_certificate),
     .doc = "true: a TLS caller's calling AE title must equal the Common Name (CN) of its "
            "certificate's subject (a caller without a certificate is rejected), so a title is "
            "only as good as the certificate behind it"},
};

static const struct schema_field dest_tls_fields[] = {
    {.key = "ca_certificates", .type = T_PATH, .off = DEST_TLS_OFF(ca_certificates),
     .doc = "CA certificates (PEM) the peer's certificate must chain to; required unless "
            "verify_server is false"},
    {.key = "certificate", .type = T_PATH, .off = DEST_TLS_OFF(certificate),
     .doc = "this node's certificate (PEM) for peers that ask for one; with private_key"},
    {.key = "private_key", .type = T_PATH, .off = DEST_TLS_OFF(private_key),
     .doc = "its private key (PEM, not encrypted); with certificate"},
    {.key = "verify_server", .type = T_BOOL, .def_int = 1, .off = DEST_TLS_OFF(verify_server),
     .doc = "check the peer's certificate: signed by one of ca_certificates, within its "
            "validity dates (its host name is not compared)"},
};

/* ---- the HTTP endpoint (node.http; checked in http.c) ---- */

#define HTTP_OFF(m) offsetof(struct config_node_http, m)
#define HTTP_TLS_OFF(m) offsetof(struct config_http_tls, m)

static const struct schema_field http_tls_fields[] = {
    {.key = "certificate", .restart = 1, .type = T_PATH, .required = 1,
     .off = HTTP_TLS_OFF(certificate), .doc = "the endpoint's certificate (PEM)"},
    {.key = "private_key", .restart = 1, .type = T_PATH, .required = 1,
     .off = HTTP_TLS_OFF(private_key),
     .doc = "its private key (PEM, not encrypted; not readable by every user)"},
};

static const struct schema_field http_fields[] = {
    {.key = "bind", .restart = 1, .type = T_STR, .def_str = "127.0.0.1", .off = HTTP_OFF(bind),
     .doc = "listen address; one other hosts can reach needs token_file"},
    {.key = "port", .restart = 1, .type = T_INT, .def_int = 8042, .min = 1, .max = 65535,
     .off = HTTP_OFF(port), .doc = "TCP port; not node.port nor node.tls.port"},
    {.key = "token_file", .restart = 1, .type = T_PATH, .off = HTTP_OFF(token_file),
     .doc = "file whose first line is the bearer token (16 to 1024 printable characters; the "
            "file not readable by every user): POST requests always need it, and with a bind "
            "other than loopback every request but /healthz, /readyz and the status page (which "
            "then asks for it); absent: no POST"},
    {.key = "tls", .type = T_SECTION, SUB(http_tls_fields), .off = HTTP_OFF(tls),
     .check = config_check_http_tls, .doc = "serve HTTPS (GnuTLS); absent: plain HTTP"},
};

#define NODE_OFF(m) offsetof(struct config_node, m)
#define DEST_OFF(m) offsetof(struct config_destination, m)
#define MODEL_OFF(m) offsetof(struct config_model, m)
#define COMPLETION_OFF(m) offsetof(struct config_completion, m)
#define TOP_OFF(m) offsetof(struct config, m)

static const struct schema_field node_fields[] = {
    {.key = "ae_title", .type = T_AE, .def_str = "AINODE", .off = NODE_OFF(ae_title),
     .doc = "AE title of this node"},
    {.key = "port", .restart = 1, .type = T_INT, .def_int = 11112, .min = 0, .max = 65535,
     .off = NODE_OFF(port),
     .doc = "TCP port to listen on for plain DICOM; 0: none, DICOM TLS only (node.tls)"},
    {.key = "bind", .restart = 1, .type = T_STR, .def_str = "127.0.0.1", .off = NODE_OFF(bind),
     .doc = "listen address"},
    {.key = "data_dir", .restart = 1, .type = T_PATH, .def_str = "./var", .off = NODE_OFF(data_dir),
     .doc = "data directory, relative to the config file's directory"},
    {.key = "stable_seconds", .type = T_INT, .def_int = 10, .min = 1, .max = 86400,
     .off = NODE_OFF(stable_seconds), .doc = "idle time after which a study is complete"},
    {.key = "max_associations", .restart = 1, .type = T_INT, .def_int = 32, .min = 1, .max = 1024,
     .off = NODE_OFF(max_associations), .doc = "concurrent associations accepted"},
    {.key = "allowed_callers", .type = T_AE_LIST, .off = NODE_OFF(allowed_callers),
     .off_n = NODE_OFF(n_allowed_callers), .doc = "calling AE titles allowed; empty allows any"},
    {.key = "log_level", .type = T_ENUM, .def_int = LOG_INFO, .names = log_level_names,
     .off = NODE_OFF(log_level), .doc = "error, warn, info or debug"},
    {.key = "log_format", .type = T_ENUM, .def_int = LOG_FORMAT_TEXT, .names = log_format_names,
     .off = NODE_OFF(log_format),
     .doc = "text (key=value fields, one line per event) or json (one JSON object per line)"},
    {.key = "shutdown_grace_seconds", .type = T_INT, .def_int = 30, .min = 0, .max = 3600,
     .off = NODE_OFF(shutdown_grace_seconds), .doc = "wait for running associations on stop"},
    {.key = "network_timeout_seconds", .type = T_INT, .def_int = 60, .min = 1, .max = 3600,
     .off = NODE_OFF(network_timeout_seconds), .doc = "ACSE/DIMSE read timeout"},
    {.key = "max_pdu", .restart = 1, .type = T_INT, .def_int = 131072, .min = 4096, .max = 131072,
     .off = NODE_OFF(max_pdu), .doc = "maximum receive PDU length"},
    {.key = "retention_days", .type = T_INT, .def_int = 0, .min = 0, .max = 36500,
     .off = NODE_OFF(retention_days),
     .doc = "delete finished studies after this many days; 0 never"},
    {.key = "disk_high_water_percent", .type = T_INT, .def_int = 0, .min = 0, .max = 99,
     .off = NODE_OFF(disk_high_water_percent),
     .doc = "delete oldest finished studies while the data disk is fuller; 0 never"},
    {.key = "artim_timeout_seconds", .restart = 1, .type = T_INT, .def_int = 10, .min = 1,
     .max = 3600, .off = NODE_OFF(artim_timeout_seconds),
     .doc = "how long a new connection may take to send its association request before it "
            "is closed"},
    {.key = "allowed_addresses", .type = T_CUSTOM, .parse = config_parse_addresses,
     .release = config_release_addresses, .type_doc = "list of IPv4/IPv6 addresses or CIDR blocks",
     .off = NODE_OFF(allowed_addresses), .off_n = NODE_OFF(n_allowed_addresses),
     .doc = "peer addresses allowed to connect, e.g. `10.0.0.0/8`, `::1`; empty allows any; "
            "others are closed at once, before any DICOM is read"},
    {.key = "allow_any_caller", .type = T_BOOL, .def_int = 0, .off = NODE_OFF(allow_any_caller),
     .doc = "must be true when `bind` is not a loopback address and neither `allowed_callers` "
            "nor `allowed_addresses` is set: any host that reaches the port may then store"},
    {.key = "max_associations_per_caller", .restart = 1, .type = T_INT, .def_int = 8, .min = 1,
     .max = 1024, .off = NODE_OFF(max_associations_per_caller),
     .doc = "concurrent associations of one calling AE title; more are rejected (transient)"},
    {.key = "max_association_seconds", .restart = 1, .type = T_INT, .def_int = 3600, .min = 1,
     .max = 604800, .off = NODE_OFF(max_association_seconds),
     .doc = "an association still open after this long is aborted, busy or not"},
    {.key = "max_dataset_mb", .restart = 1, .type = T_INT, .def_int = 2048, .min = 1,
     .max = 1048576, .off = NODE_OFF(max_dataset_mb),
     .doc = "largest data set accepted, in MiB, as received and (deflated ones) once inflated; "
            "a larger one aborts its association (0xA700 for a deflated one)"},
    {.key = "min_free_disk_mb", .type = T_INT, .def_int = 1024, .min = 0, .max = 1073741824,
     .off = NODE_OFF(min_free_disk_mb),
     .doc = "free space (MiB) the data disk keeps: below it a C-STORE is answered 0xA700 before "
            "its data set is read, and studies sent with it wait for a complete copy; 0 off"},
    {.key = "max_job_memory_mb", .type = T_INT, .def_int = LIMIT_JOB_VOLUME_MIB, .min = 16,
     .max = 1048576,
     .off = NODE_OFF(max_job_memory_mb),
     .doc = "float volume one job may hold, in MiB (decoded series, assembled and resampled "
            "volume; a job peaks at about twice this): a larger series fails its job with "
            "the reason"},
    {.key = "integrity_conflicts", .type = T_ENUM, .def_int = CONFIG_CONFLICTS_REFUSE,
     .names = conflicts_names, .off = NODE_OFF(integrity_conflicts),
     .doc = "an instance whose SOP Instance UID or series is stored in another study, or whose "
            "Patient ID is stored with other demographics: refuse (0xC000, file dropped) or "
            "quarantine (0xC000, file kept unindexed under data_dir/quarantine); the stored "
            "study never changes"},
    {.key = "tls", .type = T_SECTION, SUB(node_tls_fields), .off = NODE_OFF(tls),
     .check = config_check_node_tls,
     .doc = "a DICOM TLS listener besides node.port (BCP 195, TLS 1.2 or later); absent: none"},
    {.key = "audit_retention_days", .type = T_INT, .def_int = 365, .min = 0, .max = 36500,
     .off = NODE_OFF(audit_retention_days),
     .doc = "delete rows of the audit trail (associations, sends; `ainode audit`) after this "
            "many days, whatever the studies' retention; 0 never"},
    {.key = "http", .type = T_SECTION, SUB(http_fields), .off = NODE_OFF(http),
     .check = config_check_node_http,
     .doc = "the HTTP admin endpoint: /healthz, /readyz, /metrics (Prometheus), /api/v1/ and the "
            "status page at /; absent: none"},
};

static const struct schema_field dest_fields[] = {
    {.key = "ae_title", .type = T_AE, .required = 1, .off = DEST_OFF(ae_title),
     .doc = "AE title of the peer"},
    {.key = "host", .type = T_STR, .required = 1, .off = DEST_OFF(host),
     .doc = "host name or address of the peer"},
    {.key = "port", .type = T_INT, .required = 1, .min = 1, .max = 65535, .off = DEST_OFF(port),
     .doc = "TCP port of the peer"},
    {.key = "retry_initial_seconds", .type = T_INT, .def_int = 10, .min = 1, .max = 86400,
     .off = DEST_OFF(retry_initial_seconds), .doc = "wait before the first retry"},
    {.key = "retry_factor", .type = T_FLOAT, .def_float = 2.0, .fcheck = F_POSITIVE,
     .off = DEST_OFF(retry_factor), .doc = "each further wait is the last one times this"},
    {.key = "retry_max_seconds", .type = T_INT, .def_int = 600, .min = 1, .max = 86400,
     .off = DEST_OFF(retry_max_seconds), .doc = "longest wait between retries"},
    {.key = "max_attempts", .type = T_INT, .def_int = 10, .min = 1, .max = 1000,
     .off = DEST_OFF(max_attempts), .doc = "attempts before an item is dead-lettered"},
    {.key = "tls", .type = T_SECTION, SUB(dest_tls_fields), .off = DEST_OFF(tls),
     .check = config_check_destination_tls,
     .doc = "send over TLS (BCP 195, TLS 1.2 or later); absent: plain TCP"},
};

/* models.NAME; the file and the manifest are checked and loaded by check_model. */
static const struct schema_field model_fields[] = {
    {.key = "file", .type = T_STR, .required = 1, .off = MODEL_OFF(file),
     .doc = "builtin:NAME, or a TorchScript file relative to the config file's directory"},
    {.key = "manifest", .type = T_PATH, .off = MODEL_OFF(manifest.path),
     .doc = "the model's manifest; required unless file is builtin:NAME"},
    {.key = "device", .type = T_STR, .def_str = "cpu", .valid = config_device_problem,
     .off = MODEL_OFF(device), .doc = "cpu, cuda or cuda:N"},
    {.key = "threads", .type = T_INT, .def_int = 1, .min = 1, .max = 256,
     .off = MODEL_OFF(threads), .doc = "intra-op threads per worker"},
    {.key = "workers", .type = T_INT, .def_int = 1, .min = 1, .max = 64,
     .off = MODEL_OFF(workers), .doc = "worker threads running this model"},
    {.key = "precision", .type = T_ENUM, .def_int = CONFIG_PRECISION_FP32,
     .names = precision_names, .off = MODEL_OFF(precision),
     .doc = "number format the model runs in: fp32, or fp16 / bf16 on a CUDA device only "
            "(weights converted at load, inputs on the device, outputs back as fp32)"},
};

/* models.NAME: the file and manifest (manifest.c), then the precision
 * against the device: half formats run on CUDA only. */
static void check_model(struct schema_ctx *c, const struct schema_parsed *p, void *base)
{
    config_check_model(c, p, base);
    const struct config_model *m = base;
    if (!schema_usable(p, "precision") || !schema_usable(p, "device") || !m->device ||
        m->precision == CONFIG_PRECISION_FP32)
        return; /* fp32, or a refused precision or device: nothing more to say */
    if (strncmp(m->device, "cuda", 4) != 0) {
        const struct ynode *v = schema_pos_of(p, "precision");
        schema_report(c, v->line, v->col, "%s.precision: %s needs a CUDA device (device is %s)",
                      p->sect, precision_names[m->precision], m->device);
    }
}


static const struct schema_field completion_fields[] = {
    {.key = "required_series", .type = T_CUSTOM, .parse = rules_parse_required,
     .type_doc = "list of match mappings", .release = rules_release_match, .off = COMPLETION_OFF(required),
     .doc = "matches: complete as soon as each is met by a series"},
    {.key = "max_wait_seconds", .type = T_INT, .def_int = 0, .min = 0, .max = 2592000,
     .off = COMPLETION_OFF(max_wait_seconds), .doc = "hard limit since the first instance"},
    {.key = "on_max_wait", .type = T_ENUM, .def_int = CONFIG_ON_MAX_WAIT_PROCESS,
     .names = on_max_wait_names, .off = COMPLETION_OFF(on_max_wait),
     .doc = "process or discard a study at max_wait_seconds"},
};


const struct schema_field config_top_fields[] = {
    {.key = "node", .type = T_SECTION, SUB(node_fields), .off = TOP_OFF(node),
     .check = config_check_node,
     .doc = "this node: how it listens, where it keeps its data, how long it keeps it"},
    {.key = "destinations", .type = T_NAMED, SUB(dest_fields), .noun = "destination",
     .entry_size = sizeof(struct config_destination),
     .name_off = offsetof(struct config_destination, name), .off = TOP_OFF(destinations),
     .off_n = TOP_OFF(n_destinations), .doc = "DICOM peers results and instances are sent to"},
    {.key = "models", .type = T_NAMED, SUB(model_fields), .noun = "model",
     .entry_size = sizeof(struct config_model), .name_off = offsetof(struct config_model, name),
     .check = check_model, .release = config_release_model, .off = TOP_OFF(models),
     .off_n = TOP_OFF(n_models), .doc = "the models rules can run"},
    {.key = "rules", .type = T_CUSTOM, .parse = rules_parse_list, .release = rules_release_list,
     .type_doc = "list of rules", .off = TOP_OFF(rules), .off_n = TOP_OFF(n_rules),
     .doc = "what happens to each series of a completed study; the first that matches decides"},
    {.key = "completion", .type = T_SECTION, SUB(completion_fields), .off = TOP_OFF(completion),
     .doc = "when a study counts as complete, besides node.stable_seconds of silence"},
};
const size_t config_n_top_fields = NELEM(config_top_fields);

_Static_assert(NELEM(node_fields) <= MAX_FIELDS && NELEM(dest_fields) <= MAX_FIELDS &&
                   NELEM(model_fields) <= MAX_FIELDS && NELEM(completion_fields) <= MAX_FIELDS &&
                   NELEM(config_top_fields) <= MAX_FIELDS,
               "schema_parsed.st[] too small");
