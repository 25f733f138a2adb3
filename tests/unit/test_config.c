/* Unit tests for config/: loading, defaults, and positioned error lines. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

/* ---- helpers ---------------------------------------------------------- */

#define MAX_LINES 64

struct capture {
    int n;
    char *lines[MAX_LINES];
};

static void capture_line(void *ud, const char *line)
{
    struct capture *cap = ud;
    assert_non_null(line);
    assert_null(strchr(line, '\n'));
    if (cap->n < MAX_LINES)
        cap->lines[cap->n] = strdup(line);
    cap->n++;
}

static void capture_free(struct capture *cap)
{
    for (int i = 0; i < cap->n && i < MAX_LINES; i++)
        free(cap->lines[i]);
    cap->n = 0;
}

static char tmpdir[256];
static char paths[64][1024];
static int npaths;

static const char *data_dir(void)
{
    const char *d = getenv("AINODE_TEST_DATA");
    assert_non_null(d);
    return d;
}

/* Path of a fixture under tests/data/config. */
static const char *fixture(const char *name)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/config/%s", data_dir(), name);
    return buf;
}

/* Writes TEXT to a fresh file in the test's temp dir and returns its path. */
static const char *write_tmp(const char *name, const char *text)
{
    assert_true(npaths < 64);
    char *p = paths[npaths++];
    snprintf(p, sizeof paths[0], "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    return p;
}

static int group_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/ainode-test-config-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < npaths; i++)
        unlink(paths[i]);
    return rmdir(tmpdir);
}

/* Loads PATH expecting failure; the captured lines are left in CAP. */
static void load_fails(const char *path, struct capture *cap)
{
    static struct config sentinel;
    struct config *cfg = &sentinel; /* config_load must reset it to NULL */
    int n = config_load(path, &cfg, capture_line, cap);
    assert_int_equal(n, cap->n);
    assert_true(n > 0);
    assert_null(cfg);
}

static struct config *load_ok(const char *path)
{
    struct capture cap = {0};
    struct config *cfg = NULL;
    int n = config_load(path, &cfg, capture_line, &cap);
    for (int i = 0; i < cap.n && i < MAX_LINES; i++)
        print_error("unexpected: %s\n", cap.lines[i]);
    assert_int_equal(n, 0);
    assert_int_equal(cap.n, 0);
    assert_non_null(cfg);
    capture_free(&cap);
    return cfg;
}

/* Asserts line I of CAP is "PATH:" followed by REST. */
static void expect_line(const struct capture *cap, int i, const char *path, const char *rest)
{
    char want[1024];
    snprintf(want, sizeof want, "%s:%s", path, rest);
    assert_true(i < cap->n);
    assert_string_equal(cap->lines[i], want);
}

static void expect_single_error(const char *name, const char *yaml, const char *rest)
{
    struct capture cap = {0};
    const char *p = write_tmp(name, yaml);
    load_fails(p, &cap);
    assert_int_equal(cap.n, 1);
    expect_line(&cap, 0, p, rest);
    capture_free(&cap);
}

static void assert_defaults(const struct config *cfg)
{
    assert_string_equal(cfg->node.ae_title, "AINODE");
    assert_int_equal(cfg->node.port, 11112);
    assert_string_equal(cfg->node.bind, "127.0.0.1");
    assert_int_equal(cfg->node.stable_seconds, 10);
    assert_int_equal(cfg->node.max_associations, 32);
    assert_int_equal(cfg->node.n_allowed_callers, 0);
    assert_int_equal(cfg->node.log_level, CONFIG_LOG_INFO);
    assert_int_equal(cfg->node.shutdown_grace_seconds, 30);
    assert_int_equal(cfg->node.network_timeout_seconds, 60);
    assert_int_equal(cfg->node.max_pdu, 131072);
    assert_int_equal(cfg->n_destinations, 0);
}

/* ---- valid files ------------------------------------------------------ */

static void test_empty_file_gives_all_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok(fixture("empty.yaml"));
    assert_defaults(cfg);
    char want[1024];
    snprintf(want, sizeof want, "%s/config/var", data_dir());
    assert_string_equal(cfg->node.data_dir, want);
    assert_string_equal(cfg->path, fixture("empty.yaml"));
    config_free(cfg);
}

static void test_only_node_section_is_valid(void **state)
{
    (void)state;
    struct config *cfg = load_ok(fixture("only_node.yaml"));
    assert_defaults(cfg);
    config_free(cfg);
    cfg = load_ok(fixture("node_empty_mapping.yaml"));
    assert_defaults(cfg);
    config_free(cfg);
}

static void test_comment_only_and_bare_document_are_valid(void **state)
{
    (void)state;
    struct config *cfg = load_ok(write_tmp("comment.yaml", "# nothing here\n"));
    assert_defaults(cfg);
    config_free(cfg);
    cfg = load_ok(write_tmp("bare_doc.yaml", "---\n...\n"));
    assert_defaults(cfg);
    config_free(cfg);
}

static void test_full_file_round_trips_all_values(void **state)
{
    (void)state;
    struct config *cfg = load_ok(fixture("full.yaml"));
    assert_string_equal(cfg->node.ae_title, "TESTNODE");
    assert_int_equal(cfg->node.port, 4242);
    assert_string_equal(cfg->node.bind, "0.0.0.0");
    assert_int_equal(cfg->node.stable_seconds, 5);
    assert_int_equal(cfg->node.max_associations, 8);
    assert_int_equal(cfg->node.n_allowed_callers, 2);
    assert_string_equal(cfg->node.allowed_callers[0], "PACS");
    assert_string_equal(cfg->node.allowed_callers[1], "MODALITY 1");
    assert_int_equal(cfg->node.log_level, CONFIG_LOG_DEBUG);
    assert_int_equal(cfg->node.shutdown_grace_seconds, 0);
    assert_int_equal(cfg->node.network_timeout_seconds, 120);
    assert_int_equal(cfg->node.max_pdu, 16384);

    assert_int_equal(cfg->n_destinations, 2);
    assert_string_equal(cfg->destinations[0].name, "pacs");
    assert_string_equal(cfg->destinations[0].ae_title, "ORTHANC");
    assert_string_equal(cfg->destinations[0].host, "pacs.example.org");
    assert_int_equal(cfg->destinations[0].port, 4242);
    assert_string_equal(cfg->destinations[1].name, "viewer.2");
    assert_string_equal(cfg->destinations[1].ae_title, "VIEWER");
    assert_string_equal(cfg->destinations[1].host, "10.0.0.7");
    assert_int_equal(cfg->destinations[1].port, 104);
    config_free(cfg);
}

static void test_relative_data_dir_resolves_against_config_dir(void **state)
{
    (void)state;
    char want[1024];
    struct config *cfg = load_ok(fixture("full.yaml"));
    snprintf(want, sizeof want, "%s/config/data/store", data_dir());
    assert_string_equal(cfg->node.data_dir, want);
    config_free(cfg);
}

static void test_relative_config_path_is_made_absolute(void **state)
{
    (void)state;
    char *cwd = getcwd(NULL, 0);
    assert_non_null(cwd);
    assert_int_equal(chdir(data_dir()), 0);
    struct capture cap = {0};
    struct config *cfg = NULL;
    int n = config_load("./config//empty.yaml", &cfg, capture_line, &cap);
    assert_int_equal(chdir(cwd), 0);
    free(cwd);
    assert_int_equal(n, 0);
    assert_string_equal(cfg->path, fixture("empty.yaml"));
    char want[1024];
    snprintf(want, sizeof want, "%s/config/var", data_dir());
    assert_string_equal(cfg->node.data_dir, want);
    config_free(cfg);
}

static void test_absolute_data_dir_is_kept_and_normalised(void **state)
{
    (void)state;
    struct config *cfg = load_ok(fixture("absolute_data_dir.yaml"));
    assert_string_equal(cfg->node.data_dir, "/srv/ainode/data");
    config_free(cfg);
}

static void test_empty_reserved_sections_are_accepted(void **state)
{
    (void)state;
    struct config *cfg = load_ok(write_tmp("reserved_empty.yaml",
                                           "models: {}\nrules: []\ndestinations: {}\n"));
    config_free(cfg);
    cfg = load_ok(write_tmp("reserved_null.yaml", "models:\nrules: ~\ndestinations:\n"));
    config_free(cfg);
}

static void test_quoted_strings_are_accepted(void **state)
{
    (void)state;
    struct config *cfg = load_ok(write_tmp("quoted.yaml",
                                           "node:\n"
                                           "  ae_title: 'MY AE'\n"
                                           "  bind: \"::1\"\n"
                                           "  log_level: \"warn\"\n"));
    assert_string_equal(cfg->node.ae_title, "MY AE");
    assert_string_equal(cfg->node.bind, "::1");
    assert_int_equal(cfg->node.log_level, CONFIG_LOG_WARN);
    config_free(cfg);
}

static void test_range_limits_are_inclusive(void **state)
{
    (void)state;
    struct config *cfg = load_ok(write_tmp("limits.yaml",
                                           "node:\n"
                                           "  ae_title: ABCDEFGHIJKLMNOP\n"
                                           "  port: 65535\n"
                                           "  stable_seconds: 86400\n"
                                           "  max_associations: 1\n"
                                           "  shutdown_grace_seconds: 3600\n"
                                           "  network_timeout_seconds: 1\n"
                                           "  max_pdu: 4096\n"));
    assert_string_equal(cfg->node.ae_title, "ABCDEFGHIJKLMNOP");
    assert_int_equal(cfg->node.port, 65535);
    assert_int_equal(cfg->node.stable_seconds, 86400);
    assert_int_equal(cfg->node.max_associations, 1);
    assert_int_equal(cfg->node.shutdown_grace_seconds, 3600);
    assert_int_equal(cfg->node.network_timeout_seconds, 1);
    assert_int_equal(cfg->node.max_pdu, 4096);
    config_free(cfg);
}

static void test_deploy_sample_loads_without_errors(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/../../deploy/ainode.yaml", data_dir());
    struct config *cfg = load_ok(path);
    assert_defaults(cfg);
    config_free(cfg);
}

/* ---- error lines ------------------------------------------------------ */

static void test_unknown_key_is_reported_at_the_key(void **state)
{
    (void)state;
    expect_single_error("unknown_node_key.yaml", "node:\n  port: 1\n  colour: red\n",
                        "3:3: unknown key 'colour' in node");
    expect_single_error("unknown_top_key.yaml", "node: {}\nextra: 1\n",
                        "2:1: unknown top-level key 'extra'");
    expect_single_error("unknown_dest_key.yaml",
                        "destinations:\n  pacs: {ae_title: P, host: h, port: 1, tls: yes}\n",
                        "2:41: unknown key 'tls' in destinations.pacs");
}

static void test_wrong_types_are_reported_at_the_value(void **state)
{
    (void)state;
    struct capture cap = {0};
    const char *p = write_tmp("types.yaml",
                              "node:\n"
                              "  port: \"11112\"\n"            /* 2 */
                              "  stable_seconds: 1.5\n"        /* 3 */
                              "  max_associations: abc\n"      /* 4 */
                              "  max_pdu: 0x1000\n"            /* 5 */
                              "  bind: [a, b]\n"               /* 6 */
                              "  data_dir: {x: 1}\n"           /* 7 */
                              "  allowed_callers: PACS\n"      /* 8 */
                              "  ae_title:\n"                  /* 9 */
                              "  network_timeout_seconds: !!int 5\n" /* 10 */
                              "destinations: [a]\n");          /* 11 */
    load_fails(p, &cap);
    assert_int_equal(cap.n, 10);
    expect_line(&cap, 0, p, "2:9: node.port: expected an integer");
    expect_line(&cap, 1, p, "3:19: node.stable_seconds: expected an integer");
    expect_line(&cap, 2, p, "4:21: node.max_associations: expected an integer");
    expect_line(&cap, 3, p, "5:12: node.max_pdu: expected an integer");
    expect_line(&cap, 4, p, "6:9: node.bind: expected a string");
    expect_line(&cap, 5, p, "7:13: node.data_dir: expected a string");
    expect_line(&cap, 6, p, "8:20: node.allowed_callers: expected a sequence");
    expect_line(&cap, 7, p, "9:3: node.ae_title: expected a string");
    expect_line(&cap, 8, p, "10:34: node.network_timeout_seconds: expected an integer");
    expect_line(&cap, 9, p, "11:15: destinations: expected a mapping");
    capture_free(&cap);
}

static void test_non_mapping_sections_are_rejected(void **state)
{
    (void)state;
    expect_single_error("node_scalar.yaml", "node: 5\n", "1:7: node: expected a mapping");
    expect_single_error("top_sequence.yaml", "- node\n", "1:1: top level must be a mapping");
    expect_single_error("dest_scalar.yaml", "destinations:\n  pacs: here\n",
                        "2:9: destinations.pacs: expected a mapping");
}

static void test_out_of_range_values_report_the_bounds(void **state)
{
    (void)state;
    struct capture cap = {0};
    const char *p = write_tmp("range.yaml",
                              "node:\n"
                              "  port: 70000\n"
                              "  max_pdu: 1024\n"
                              "  shutdown_grace_seconds: -1\n"
                              "  stable_seconds: 99999999999999999999999\n"
                              "  network_timeout_seconds: 0\n"
                              "destinations:\n"
                              "  pacs: {ae_title: P, host: h, port: 0}\n");
    load_fails(p, &cap);
    assert_int_equal(cap.n, 6);
    expect_line(&cap, 0, p, "2:9: node.port: 70000 is out of range 1..65535");
    expect_line(&cap, 1, p, "3:12: node.max_pdu: 1024 is out of range 4096..131072");
    expect_line(&cap, 2, p, "4:27: node.shutdown_grace_seconds: -1 is out of range 0..3600");
    expect_line(&cap, 3, p,
                "5:19: node.stable_seconds: 99999999999999999999999 is out of range 1..86400");
    expect_line(&cap, 4, p, "6:28: node.network_timeout_seconds: 0 is out of range 1..3600");
    expect_line(&cap, 5, p, "8:38: destinations.pacs.port: 0 is out of range 1..65535");
    capture_free(&cap);
}

static void test_duplicate_key_is_reported_at_the_second_occurrence(void **state)
{
    (void)state;
    struct capture cap = {0};
    const char *p = write_tmp("dupkey.yaml",
                              "node:\n"
                              "  port: 1\n"
                              "  port: 2\n"
                              "node: {}\n");
    load_fails(p, &cap);
    assert_int_equal(cap.n, 2);
    expect_line(&cap, 0, p, "3:3: duplicate key 'port'");
    expect_line(&cap, 1, p, "4:1: duplicate key 'node'");
    capture_free(&cap);
}

static void test_duplicate_allowed_caller_is_rejected(void **state)
{
    (void)state;
    expect_single_error("dupcaller.yaml",
                        "node:\n"
                        "  allowed_callers:\n"
                        "    - PACS\n"
                        "    - CT1\n"
                        "    - PACS\n",
                        "5:7: node.allowed_callers: duplicate name 'PACS'");
}

static void test_duplicate_destination_is_rejected(void **state)
{
    (void)state;
    expect_single_error("dupdest.yaml",
                        "destinations:\n"
                        "  pacs:\n"
                        "    ae_title: A\n"
                        "    host: a\n"
                        "    port: 104\n"
                        "  pacs:\n"
                        "    ae_title: B\n"
                        "    host: b\n"
                        "    port: 104\n",
                        "6:3: duplicate destination 'pacs'");
}

static void test_bad_ae_titles_are_rejected(void **state)
{
    (void)state;
    struct capture cap = {0};
    const char *p = write_tmp("badae.yaml",
                              "node:\n"
                              "  ae_title: ABCDEFGHIJKLMNOPQ\n"
                              "  allowed_callers: ['A\\B', ' LEAD', 'TRAIL ', '', \"TAB\\t\"]\n"
                              "destinations:\n"
                              "  pacs: {ae_title: \"X\\\\Y\", host: h, port: 104}\n");
    load_fails(p, &cap);
    assert_int_equal(cap.n, 7);
    expect_line(&cap, 0, p,
                "2:13: node.ae_title: AE title 'ABCDEFGHIJKLMNOPQ' is longer than 16 characters");
    expect_line(&cap, 1, p, "3:21: node.allowed_callers: AE title 'A\\B' contains a backslash");
    expect_line(&cap, 2, p,
                "3:28: node.allowed_callers: AE title ' LEAD' has leading or trailing spaces");
    expect_line(&cap, 3, p,
                "3:37: node.allowed_callers: AE title 'TRAIL ' has leading or trailing spaces");
    expect_line(&cap, 4, p, "3:47: node.allowed_callers: AE title '' must not be empty");
    expect_line(&cap, 5, p,
                "3:51: node.allowed_callers: AE title 'TAB\\x09' contains a character that is "
                "not printable ASCII");
    expect_line(&cap, 6, p,
                "5:20: destinations.pacs.ae_title: AE title 'X\\Y' contains a backslash");
    capture_free(&cap);
}

static void test_bad_log_level_is_rejected(void **state)
{
    (void)state;
    expect_single_error("badlevel.yaml", "node:\n  log_level: verbose\n",
                        "2:14: node.log_level: 'verbose' is not one of error, warn, info, debug");
}

static void test_empty_strings_are_rejected(void **state)
{
    (void)state;
    expect_single_error("emptybind.yaml", "node:\n  bind: ''\n",
                        "2:9: node.bind: must not be empty");
}

static void test_destination_needs_all_keys_and_a_valid_name(void **state)
{
    (void)state;
    struct capture cap = {0};
    const char *p = write_tmp("destkeys.yaml",
                              "destinations:\n"
                              "  pacs:\n"
                              "    host: pacs.local\n"
                              "  'bad name': {ae_title: A, host: h, port: 1}\n");
    load_fails(p, &cap);
    assert_int_equal(cap.n, 3);
    expect_line(&cap, 0, p, "2:3: destinations.pacs: missing required key 'ae_title'");
    expect_line(&cap, 1, p, "2:3: destinations.pacs: missing required key 'port'");
    expect_line(&cap, 2, p,
                "4:3: destinations: invalid name 'bad name' (use letters, digits, '_', '.', '-')");
    capture_free(&cap);
}

static void test_nonempty_models_and_rules_are_rejected(void **state)
{
    (void)state;
    struct capture cap = {0};
    const char *p = write_tmp("reserved.yaml",
                              "models:\n"
                              "  chest: {path: x.onnx}\n"
                              "rules:\n"
                              "  - match: CT\n");
    load_fails(p, &cap);
    assert_int_equal(cap.n, 2);
    expect_line(&cap, 0, p, "1:1: models: not supported by this version of ainode");
    expect_line(&cap, 1, p, "3:1: rules: not supported by this version of ainode");
    capture_free(&cap);
}

static void test_multiple_errors_are_all_reported_in_file_order(void **state)
{
    (void)state;
    struct capture cap = {0};
    const char *p = write_tmp("multi.yaml",
                              "node:\n"
                              "  port: 0\n"
                              "  bogus: 1\n"
                              "  log_level: loud\n"
                              "destinations:\n"
                              "  x: {ae_title: A, host: h}\n"
                              "rules: [1]\n");
    load_fails(p, &cap);
    assert_int_equal(cap.n, 5);
    expect_line(&cap, 0, p, "2:9: node.port: 0 is out of range 1..65535");
    expect_line(&cap, 1, p, "3:3: unknown key 'bogus' in node");
    expect_line(&cap, 2, p, "4:14: node.log_level: 'loud' is not one of error, warn, info, debug");
    expect_line(&cap, 3, p, "6:3: destinations.x: missing required key 'port'");
    expect_line(&cap, 4, p, "7:1: rules: not supported by this version of ainode");
    capture_free(&cap);
}

static void test_syntax_error_is_positioned_and_not_printed(void **state)
{
    (void)state;
    char errpath[600];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", tmpdir);
    assert_true(npaths < 64);
    snprintf(paths[npaths++], sizeof paths[0], "%s", errpath);

    const char *p = write_tmp("syntax.yaml", "node:\n  port: 1\n bind: x\n");
    const char *q = write_tmp("syntax2.yaml", "node:\n  bind: \"abc\n");

    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    close(fd);

    struct capture cap1 = {0}, cap2 = {0};
    struct config *cfg1 = NULL, *cfg2 = NULL;
    int n1 = config_load(p, &cfg1, capture_line, &cap1);
    int n2 = config_load(q, &cfg2, capture_line, &cap2);

    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);

    struct stat st;
    assert_int_equal(stat(errpath, &st), 0);
    assert_int_equal(st.st_size, 0);

    assert_int_equal(n1, 1);
    assert_null(cfg1);
    expect_line(&cap1, 0, p, "3:2: invalid indentation in mapping");
    assert_int_equal(n2, 1);
    assert_null(cfg2);
    expect_line(&cap2, 0, q, "2:10: double-quoted scalar without closing quote");
    capture_free(&cap1);
    capture_free(&cap2);
}

static void test_aliases_and_extra_documents_are_rejected(void **state)
{
    (void)state;
    expect_single_error("alias.yaml", "node:\n  port: &p 104\n  max_associations: *p\n",
                        "3:21: aliases are not supported");
    expect_single_error("twodocs.yaml", "node: {}\n---\nnode: {}\n",
                        "2:1: only one YAML document is allowed");
}

static void test_unreadable_file_is_one_unpositioned_line(void **state)
{
    (void)state;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/does-not-exist.yaml", tmpdir);
    struct capture cap = {0};
    load_fails(missing, &cap);
    assert_int_equal(cap.n, 1);
    expect_line(&cap, 0, missing, " cannot read: No such file or directory");
    capture_free(&cap);

    load_fails(tmpdir, &cap);
    assert_int_equal(cap.n, 1);
    expect_line(&cap, 0, tmpdir, " cannot read: Is a directory");
    capture_free(&cap);
}

/* ---- API -------------------------------------------------------------- */

static void test_config_free_accepts_null(void **state)
{
    (void)state;
    config_free(NULL);
}

static void test_load_works_without_error_callback(void **state)
{
    (void)state;
    struct config *cfg = NULL;
    const char *p = write_tmp("nocb.yaml", "node:\n  port: x\n  bind: 1.2.3.4\n  nope: 1\n");
    assert_int_equal(config_load(p, &cfg, NULL, NULL), 2);
    assert_null(cfg);
}

static void test_any_caller_allowed_when_list_empty(void **state)
{
    (void)state;
    struct config *cfg = load_ok(fixture("empty.yaml"));
    assert_int_equal(config_caller_allowed(cfg, "ANYONE"), 1);
    assert_int_equal(config_caller_allowed(cfg, "ANYONE          "), 1);
    assert_int_equal(config_caller_allowed(cfg, ""), 1);
    config_free(cfg);
}

static void test_caller_allowed_matches_exactly_after_trimming_padding(void **state)
{
    (void)state;
    struct config *cfg = load_ok(fixture("full.yaml")); /* PACS, "MODALITY 1" */
    assert_int_equal(config_caller_allowed(cfg, "PACS"), 1);
    assert_int_equal(config_caller_allowed(cfg, "PACS            "), 1);
    assert_int_equal(config_caller_allowed(cfg, "MODALITY 1"), 1);
    assert_int_equal(config_caller_allowed(cfg, "MODALITY 1      "), 1);
    assert_int_equal(config_caller_allowed(cfg, "MODALITY"), 0);
    assert_int_equal(config_caller_allowed(cfg, "pacs"), 0);
    assert_int_equal(config_caller_allowed(cfg, "PACS2"), 0);
    assert_int_equal(config_caller_allowed(cfg, "PAC"), 0);
    assert_int_equal(config_caller_allowed(cfg, ""), 0);
    assert_int_equal(config_caller_allowed(cfg, NULL), 0);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_file_gives_all_defaults),
        cmocka_unit_test(test_only_node_section_is_valid),
        cmocka_unit_test(test_comment_only_and_bare_document_are_valid),
        cmocka_unit_test(test_full_file_round_trips_all_values),
        cmocka_unit_test(test_relative_data_dir_resolves_against_config_dir),
        cmocka_unit_test(test_relative_config_path_is_made_absolute),
        cmocka_unit_test(test_absolute_data_dir_is_kept_and_normalised),
        cmocka_unit_test(test_empty_reserved_sections_are_accepted),
        cmocka_unit_test(test_quoted_strings_are_accepted),
        cmocka_unit_test(test_range_limits_are_inclusive),
        cmocka_unit_test(test_deploy_sample_loads_without_errors),
        cmocka_unit_test(test_unknown_key_is_reported_at_the_key),
        cmocka_unit_test(test_wrong_types_are_reported_at_the_value),
        cmocka_unit_test(test_non_mapping_sections_are_rejected),
        cmocka_unit_test(test_out_of_range_values_report_the_bounds),
        cmocka_unit_test(test_duplicate_key_is_reported_at_the_second_occurrence),
        cmocka_unit_test(test_duplicate_allowed_caller_is_rejected),
        cmocka_unit_test(test_duplicate_destination_is_rejected),
        cmocka_unit_test(test_bad_ae_titles_are_rejected),
        cmocka_unit_test(test_bad_log_level_is_rejected),
        cmocka_unit_test(test_empty_strings_are_rejected),
        cmocka_unit_test(test_destination_needs_all_keys_and_a_valid_name),
        cmocka_unit_test(test_nonempty_models_and_rules_are_rejected),
        cmocka_unit_test(test_multiple_errors_are_all_reported_in_file_order),
        cmocka_unit_test(test_syntax_error_is_positioned_and_not_printed),
        cmocka_unit_test(test_aliases_and_extra_documents_are_rejected),
        cmocka_unit_test(test_unreadable_file_is_one_unpositioned_line),
        cmocka_unit_test(test_config_free_accepts_null),
        cmocka_unit_test(test_load_works_without_error_callback),
        cmocka_unit_test(test_any_caller_allowed_when_list_empty),
        cmocka_unit_test(test_caller_allowed_matches_exactly_after_trimming_padding),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
