/*
 * fuzz_rules — the rule matcher on values a peer chose. The rules are the
 * admin's (one fixed configuration using every kind of condition); the
 * values of every indexed attribute, the association's AE titles and
 * address come from the input, as they come from received instances:
 * the input is split at NUL bytes into those fields, in attr.def order.
 * Planning, early completion and explain run over one or two such series.
 */
#include "fuzz.h"

#include "common/attr.h"
#include "common/plan.h"
#include "config/config.h"
#include "rules/rules.h"

#include <string.h>

static const char config_text[] =
    "node:\n"
    "  data_dir: /nonexistent\n"
    "destinations:\n"
    "  pacs: {ae_title: PACS, host: 127.0.0.1, port: 104}\n"
    "  archive: {ae_title: ARCHIVE, host: 127.0.0.1, port: 105}\n"
    "completion:\n"
    "  required_series:\n"
    "    - {Modality: CT, SeriesDescription: {regex: \"lung\"}}\n"
    "    - {Modality: [CT, MR], ImageType: {contains: AXIAL}}\n"
    "rules:\n"
    "  - name: exact\n"
    "    match: {Modality: CT, BodyPartExamined: [CHEST, THORAX, HEAD]}\n"
    "    forward_to: [pacs]\n"
    "    continue: true\n"
    "  - name: patterns\n"
    "    match:\n"
    "      SeriesDescription: {regex: \"(bone|body)+.*[0-9]{2,}$\"}\n"
    "      StudyDescription: {glob: \"*CHEST*[!x]?\"}\n"
    "    any:\n"
    "      - {SliceThickness: {range: [0.5, 2.5]}}\n"
    "      - {SeriesNumber: {range: [-1e300, 1e300]}}\n"
    "      - {StudyDate: {glob: \"20[23]?????\"}}\n"
    "    not: {ImageType: {contains: LOCALIZER}}\n"
    "    forward_to: [archive]\n"
    "    priority: stat\n"
    "    continue: true\n"
    "  - name: facts\n"
    "    match:\n"
    "      calling_ae: {glob: \"CT*\"}\n"
    "      source_address: {regex: \"^127\\\\.\"}\n"
    "      instances: {range: [1, 1000]}\n"
    "      ProtocolName: {present: false}\n"
    "      StudyInstanceUID: {present: true}\n"
    "    forward_to: [pacs, archive]\n"
    "    priority: low\n"
    "    continue: true\n"
    "  - name: rest\n"
    "    forward_to: [pacs]\n";

static struct config *cfg;

static void show(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "%s\n", line);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[64];
    int fd = fuzz_file((const uint8_t *)config_text, sizeof config_text - 1, path);
    if (fd < 0 || config_load(path, &cfg, show, NULL) != 0) {
        fprintf(stderr, "fuzz_rules: the fixed configuration does not load\n");
        exit(1);
    }
    close(fd);
    return 0;
}

/* Fills S from the NUL-separated fields of DATA (copied to BUF, which
 * must hold SIZE + 1 bytes); returns where the fields stopped. */
static size_t fill_series(const uint8_t *data, size_t size, char *buf, struct attr_series *s)
{
    memset(s, 0, sizeof *s);
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char **slots[ATTR_COUNT + 3];
    for (int i = 0; i < ATTR_COUNT; i++)
        slots[i] = &s->value[i];
    slots[ATTR_COUNT] = &s->calling_ae;
    slots[ATTR_COUNT + 1] = &s->called_ae;
    slots[ATTR_COUNT + 2] = &s->source_address;
    size_t pos = 0;
    for (int i = 0; i < ATTR_COUNT + 3 && pos <= size; i++) {
        size_t len = strlen(buf + pos);
        /* An empty field stays absent, as an empty value is in the store. */
        if (len)
            *slots[i] = buf + pos;
        pos += len + 1;
    }
    s->instances = size ? data[0] : 0;
    return pos;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    struct attr_series rows[2];
    size_t used = fill_series(data, size, buf, &rows[0]);
    size_t n = 1;
    char *buf2 = NULL;
    if (used < size && (buf2 = malloc(size - used + 1))) {
        fill_series(data + used, size - used, buf2, &rows[1]);
        n = 2;
    }
    struct plan p;
    memset(&p, 0, sizeof p);
    rules_plan(cfg, rows, n, &p);
    plan_free(&p);
    rules_required_met(cfg, rows, n);
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) {
        rules_explain(cfg, &rows[0], devnull);
        fclose(devnull);
    }
    free(buf2);
    free(buf);
    return 0;
}
