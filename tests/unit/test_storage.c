/* Unit tests of the durable instance store and its SQLite index. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "storage/storage.h"
#include "storage/internal.h" /* storage_set_retain_hook */

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STUDY "1.2.826.0.1.3680043.8.498.1"
#define SERIES "1.2.826.0.1.3680043.8.498.1.1"
#define SERIES2 "1.2.826.0.1.3680043.8.498.1.2"
#define CT_CLASS "1.2.840.10008.5.1.4.1.1.2"
#define EXPLICIT_LE "1.2.840.10008.1.2.1"

struct fixture {
    char dir[256];
    struct storage *st;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ainode-test-storage-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char err[256];
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    storage_close(f->st);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void write_temp(struct storage *st, const char *content, char *path, size_t len)
{
    assert_int_equal(storage_temp_path(st, path, len), STORAGE_OK);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static void make_instance(struct storage_instance *inst, const char *series, const char *sop,
                          int64_t when)
{
    memset(inst, 0, sizeof *inst);
    inst->attr[ATTR_SOP_CLASS_UID] = CT_CLASS;
    inst->attr[ATTR_SOP_INSTANCE_UID] = sop;
    inst->attr[ATTR_STUDY_INSTANCE_UID] = STUDY;
    inst->attr[ATTR_SERIES_INSTANCE_UID] = series;
    inst->attr[ATTR_MODALITY] = "CT";
    inst->attr[ATTR_ROWS] = "512";
    inst->transfer_syntax = EXPLICIT_LE;
    inst->calling_ae = "MODALITY";
    inst->called_ae = "AINODE";
    inst->source_addr = "127.0.0.1";
    inst->received_ms = when;
}

static int commit_content(struct storage *st, const char *series, const char *sop,
                          const char *content, int64_t when)
{
    char temp[512], err[256];
    struct storage_instance inst;
    write_temp(st, content, temp, sizeof temp);
    make_instance(&inst, series, sop, when);
    int rc = storage_commit(st, temp, &inst, err, sizeof err);
    /* Consumed either way. */
    assert_int_not_equal(access(temp, F_OK), 0);
    return rc;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

struct tally {
    int studies;
    int64_t instances, series;
    char state[16];
};

static int tally_fn(void *ud, const struct storage_study *s)
{
    struct tally *t = ud;
    t->studies++;
    t->instances += s->instances;
    t->series += s->series;
    snprintf(t->state, sizeof t->state, "%s", s->state);
    return 0;
}

static struct tally tally(struct storage *st)
{
    struct tally t;
    memset(&t, 0, sizeof t);
    assert_int_equal(storage_foreach_study(st, tally_fn, &t), STORAGE_OK);
    return t;
}

/* What the node does to complete studies: each study idle for
 * STABLE_SECONDS as of NOW_MS is planned series by series with PLAN (NULL
 * plans nothing) outside the store and the plan committed against the
 * study's last_received. */
typedef void (*planner_fn)(void *ud, const struct attr_series *s, struct plan *p);

struct receiving_list {
    int n;
    char uid[16][65];
    int64_t last[16];
};

static int collect_receiving(void *ud, const struct storage_receiving *r)
{
    struct receiving_list *l = ud;
    if (l->n < 16) {
        snprintf(l->uid[l->n], 65, "%s", r->study_uid);
        l->last[l->n++] = r->last_received_ms;
    }
    return 0;
}

static void plan_study(struct storage *st, const char *study_uid, planner_fn plan, void *ud,
                       struct plan *p)
{
    struct attr_series *rows;
    size_t n;
    assert_int_equal(storage_study_series(st, study_uid, &rows, &n), STORAGE_OK);
    for (size_t k = 0; plan && k < n; k++)
        plan(ud, &rows[k], p);
    storage_series_free(rows, n);
}

static void complete_due(struct storage *st, int64_t now_ms, int stable_seconds, planner_fn plan,
                         void *ud, int *moved, int *jobs)
{
    struct receiving_list l;
    memset(&l, 0, sizeof l);
    *moved = *jobs = 0;
    assert_int_equal(storage_foreach_receiving(st, collect_receiving, &l), STORAGE_OK);
    for (int i = 0; i < l.n; i++) {
        if (now_ms - l.last[i] < (int64_t)stable_seconds * 1000)
            continue;
        struct plan p = {0};
        int q = 0;
        plan_study(st, l.uid[i], plan, ud, &p);
        assert_int_equal(storage_commit_plan(st, l.uid[i], l.last[i], &p, 0, now_ms, &q),
                         STORAGE_OK);
        plan_free(&p);
        (*moved)++;
        *jobs += q;
    }
}

/* Plans model "seg" for CT series (results to pacs) and "other" for every
 * series. */
static void plan_ct(void *ud, const struct attr_series *s, struct plan *p)
{
    int *calls = ud;
    const char *series = s->value[ATTR_SERIES_INSTANCE_UID];
    const char *pacs = "pacs";
    (*calls)++;
    if (s->value[ATTR_MODALITY] && strcmp(s->value[ATTR_MODALITY], "CT") == 0)
        assert_int_equal(plan_add_job(p, series, "seg", PLAN_PRIORITY_NORMAL, &pacs, 1), 0);
    assert_int_equal(plan_add_job(p, series, "other", PLAN_PRIORITY_NORMAL, NULL, 0), 0);
}

static void test_uid_grammar_accepts_valid_uids(void **state)
{
    (void)state;
    assert_true(storage_uid_valid("1.2.840.10008.5.1.4.1.1.2"));
    assert_true(storage_uid_valid("0"));
    assert_true(storage_uid_valid("1.0.3"));
    assert_true(storage_uid_valid(
        "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.2"));
}

static void test_uid_grammar_rejects_path_tricks_and_bad_syntax(void **state)
{
    (void)state;
    const char *bad[] = {"", "..", "../etc/passwd", "1..2", ".1.2", "1.2.", "1.02.3",
                         "1.2/3", "1.2 ", "1.2a", "1.2\\3", "-1.2", NULL};
    for (int i = 0; bad[i]; i++)
        assert_false(storage_uid_valid(bad[i]));
    assert_false(storage_uid_valid(NULL));
    char long_uid[70];
    memset(long_uid, '1', 65);
    long_uid[65] = '\0';
    assert_false(storage_uid_valid(long_uid));
}

static void test_commit_places_file_and_indexes_row(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "first", 1000), STORAGE_OK);
    char path[512], expect[512];
    assert_int_equal(storage_instance_path(f->st, "1.2.3.1", path, sizeof path), STORAGE_OK);
    snprintf(expect, sizeof expect, "%s/instances/%s/%s/1.2.3.1.dcm", f->dir, STUDY, SERIES);
    assert_string_equal(path, expect);
    assert_string_equal(slurp(path), "first");
    struct tally t = tally(f->st);
    assert_int_equal(t.studies, 1);
    assert_int_equal(t.instances, 1);
    assert_int_equal(t.series, 1);
    assert_string_equal(t.state, "receiving");
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s/tmp", f->dir);
    assert_int_equal(count_entries(tmp), 0);
}

static void test_commit_rejects_invalid_uid_and_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    char temp[512], err[256] = "";
    struct storage_instance inst;
    write_temp(f->st, "evil", temp, sizeof temp);
    make_instance(&inst, "../../../tmp", "1.2.3", 1000);
    assert_int_equal(storage_commit(f->st, temp, &inst, err, sizeof err), STORAGE_EINVAL);
    assert_string_equal(err, "invalid SeriesInstanceUID");
    assert_int_not_equal(access(temp, F_OK), 0);
    char inst_dir[300];
    snprintf(inst_dir, sizeof inst_dir, "%s/instances", f->dir);
    assert_int_equal(count_entries(inst_dir), 0);
    assert_int_equal(tally(f->st).studies, 0);
}

static void test_commit_rejects_missing_uid(void **state)
{
    struct fixture *f = *state;
    char temp[512], err[256] = "";
    struct storage_instance inst;
    write_temp(f->st, "x", temp, sizeof temp);
    make_instance(&inst, SERIES, "1.2.3", 1000);
    inst.attr[ATTR_STUDY_INSTANCE_UID] = NULL;
    assert_int_equal(storage_commit(f->st, temp, &inst, err, sizeof err), STORAGE_EINVAL);
    assert_string_equal(err, "missing StudyInstanceUID");
    assert_int_equal(tally(f->st).studies, 0);
}

static void test_commit_io_failure_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    /* A plain file where the study directory should go makes placing fail. */
    char blocker[512];
    snprintf(blocker, sizeof blocker, "%s/instances/%s", f->dir, STUDY);
    FILE *fp = fopen(blocker, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "data", 1000), STORAGE_EIO);
    assert_int_equal(tally(f->st).studies, 0);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s/tmp", f->dir);
    assert_int_equal(count_entries(tmp), 0);
}

static void test_resend_replaces_previous_version(void **state)
{
    struct fixture *f = *state;
    char first[512], second[512];
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "version one", 1000), STORAGE_OK);
    assert_int_equal(storage_instance_path(f->st, "1.2.3.1", first, sizeof first), STORAGE_OK);
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "version two", 2000), STORAGE_OK);
    assert_int_equal(storage_instance_path(f->st, "1.2.3.1", second, sizeof second),
                     STORAGE_OK);
    assert_string_not_equal(first, second);
    assert_string_equal(slurp(second), "version two");
    assert_int_not_equal(access(first, F_OK), 0);
    struct tally t = tally(f->st);
    assert_int_equal(t.instances, 1);
    char series_dir[512];
    snprintf(series_dir, sizeof series_dir, "%s/instances/%s/%s", f->dir, STUDY, SERIES);
    assert_int_equal(count_entries(series_dir), 1);
}

/* An instance with its study, series and patient given: what a peer
 * resending a known UID under other parents sends. */
struct sent {
    const char *study, *series, *sop, *patient_id, *name, *birth_date, *sex;
};

static int commit_sent(struct storage *st, const struct sent *s, const char *content,
                       int64_t when, char *err, size_t errlen)
{
    char temp[512];
    struct storage_instance inst;
    write_temp(st, content, temp, sizeof temp);
    make_instance(&inst, s->series, s->sop, when);
    inst.attr[ATTR_STUDY_INSTANCE_UID] = s->study;
    inst.attr[ATTR_PATIENT_ID] = s->patient_id;
    inst.attr[ATTR_PATIENT_NAME] = s->name;
    inst.attr[ATTR_PATIENT_BIRTH_DATE] = s->birth_date;
    inst.attr[ATTR_PATIENT_SEX] = s->sex;
    err[0] = '\0';
    int rc = storage_commit(st, temp, &inst, err, errlen);
    assert_int_not_equal(access(temp, F_OK), 0);
    return rc;
}

#define OTHER_STUDY "1.2.826.0.1.3680043.8.498.2"
#define OTHER_SERIES "1.2.826.0.1.3680043.8.498.2.1"

/* Everything a refused instance must leave as it was: the rows of every
 * level and the stored file's place and bytes. */
struct snapshot {
    char rows[4096];
    char path[512];
    char bytes[64];
};

static void snapshot_take(struct fixture *f, const char *sop, struct snapshot *s)
{
    char dbpath[512];
    snprintf(dbpath, sizeof dbpath, "%s/ainode.db", f->dir);
    sqlite3 *db;
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "SELECT 'p', patient_id, issuer, patient_name, birth_date, sex, ''"
                           " FROM patients UNION ALL"
                           " SELECT 's', study_uid, patient, state, study_description, '', ''"
                           " FROM studies UNION ALL"
                           " SELECT 'r', series_uid, study_uid, modality, '', '', '' FROM series"
                           " UNION ALL SELECT 'i', sop_instance_uid, series_uid, path, size, '',"
                           " '' FROM instances ORDER BY 1, 2",
                           -1, &q, NULL),
        SQLITE_OK);
    s->rows[0] = '\0';
    while (sqlite3_step(q) == SQLITE_ROW)
        for (int i = 0; i < 7; i++) {
            size_t n = strlen(s->rows);
            const unsigned char *v = sqlite3_column_text(q, i);
            snprintf(s->rows + n, sizeof s->rows - n, "%s|", v ? (const char *)v : "NULL");
        }
    sqlite3_finalize(q);
    sqlite3_close(db);
    assert_int_equal(storage_instance_path(f->st, sop, s->path, sizeof s->path), STORAGE_OK);
    snprintf(s->bytes, sizeof s->bytes, "%.63s", slurp(s->path));
}

static void assert_unchanged(struct fixture *f, const char *sop, const struct snapshot *before)
{
    struct snapshot now;
    snapshot_take(f, sop, &now);
    assert_string_equal(now.rows, before->rows);
    assert_string_equal(now.path, before->path);
    assert_string_equal(now.bytes, before->bytes);
    /* Nothing left behind for the refused instance. */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/instances", f->dir);
    assert_int_equal(count_entries(dir), 1);
    snprintf(dir, sizeof dir, "%s/tmp", f->dir);
    assert_int_equal(count_entries(dir), 0);
}

static const struct sent ORIGINAL = {STUDY, SERIES, "1.2.3.1", "P1", "DOE^JANE", "19700101",
                                     "F"};

static void test_an_instance_resent_under_another_study_is_refused(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct snapshot before;
    assert_int_equal(commit_sent(f->st, &ORIGINAL, "original", 1000, err, sizeof err),
                     STORAGE_OK);
    snapshot_take(f, ORIGINAL.sop, &before);

    struct sent s = ORIGINAL;
    s.study = OTHER_STUDY;
    s.series = OTHER_SERIES;
    assert_int_equal(commit_sent(f->st, &s, "hostile", 2000, err, sizeof err),
                     STORAGE_EINTEGRITY);
    assert_string_equal(err, "SOPInstanceUID already stored in another study");
    assert_unchanged(f, ORIGINAL.sop, &before);

    /* Under another patient too (and another study). */
    s.patient_id = "P2";
    s.name = "ROE^RICHARD";
    assert_int_equal(commit_sent(f->st, &s, "hostile", 3000, err, sizeof err),
                     STORAGE_EINTEGRITY);
    assert_unchanged(f, ORIGINAL.sop, &before);
    struct tally t = tally(f->st);
    assert_int_equal(t.studies, 1);
    assert_int_equal(t.instances, 1);
}

static void test_an_instance_resent_into_another_series_is_refused(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct snapshot before;
    assert_int_equal(commit_sent(f->st, &ORIGINAL, "a", 1000, err, sizeof err), STORAGE_OK);
    snapshot_take(f, ORIGINAL.sop, &before);
    struct sent s = ORIGINAL;
    s.series = SERIES2;
    assert_int_equal(commit_sent(f->st, &s, "b", 2000, err, sizeof err), STORAGE_EINTEGRITY);
    assert_string_equal(err, "SOPInstanceUID already stored in another series");
    assert_unchanged(f, ORIGINAL.sop, &before);
    char series_dir[512];
    snprintf(series_dir, sizeof series_dir, "%s/instances/%s/%s", f->dir, STUDY, SERIES2);
    assert_int_not_equal(access(series_dir, F_OK), 0);
}

static void test_a_series_reused_in_another_study_is_refused(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct snapshot before;
    assert_int_equal(commit_sent(f->st, &ORIGINAL, "a", 1000, err, sizeof err), STORAGE_OK);
    snapshot_take(f, ORIGINAL.sop, &before);
    struct sent s = ORIGINAL;
    s.study = OTHER_STUDY;
    s.sop = "1.2.3.2";
    assert_int_equal(commit_sent(f->st, &s, "b", 2000, err, sizeof err), STORAGE_EINTEGRITY);
    assert_string_equal(err, "SeriesInstanceUID already stored in another study");
    assert_unchanged(f, ORIGINAL.sop, &before);
    assert_int_equal(storage_instance_path(f->st, "1.2.3.2", before.path, sizeof before.path),
                     STORAGE_ENOTFOUND);
}

static void test_a_study_is_never_moved_to_another_patient(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct snapshot before;
    assert_int_equal(commit_sent(f->st, &ORIGINAL, "a", 1000, err, sizeof err), STORAGE_OK);
    snapshot_take(f, ORIGINAL.sop, &before);
    /* The same instance resent for another patient: refused. */
    struct sent s = ORIGINAL;
    s.patient_id = "P2";
    s.name = "ROE^RICHARD";
    assert_int_equal(commit_sent(f->st, &s, "b", 2000, err, sizeof err), STORAGE_EINTEGRITY);
    assert_string_equal(err, "SOPInstanceUID already stored for another PatientID");
    assert_unchanged(f, ORIGINAL.sop, &before);
    /* A new instance of the study naming another patient: kept in the
     * study, which stays with its patient (no row for the other one). */
    s.series = SERIES2;
    s.sop = "1.2.3.2";
    assert_int_equal(commit_sent(f->st, &s, "c", 3000, err, sizeof err), STORAGE_OK);
    s.sop = "1.2.3.3";
    assert_int_equal(commit_sent(f->st, &s, "d", 4000, err, sizeof err), STORAGE_OK);
    struct attr_series *rows;
    size_t n;
    assert_int_equal(storage_study_series(f->st, STUDY, &rows, &n), STORAGE_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(rows[i].value[ATTR_PATIENT_ID], "P1");
        assert_string_equal(rows[i].value[ATTR_PATIENT_NAME], "DOE^JANE");
    }
    storage_series_free(rows, n);
    struct snapshot now;
    snapshot_take(f, ORIGINAL.sop, &now);
    assert_null(strstr(now.rows, "P2"));
    assert_int_equal(tally(f->st).instances, 3);
}

static void test_a_patient_id_with_other_demographics_is_refused(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct snapshot before;
    assert_int_equal(commit_sent(f->st, &ORIGINAL, "a", 1000, err, sizeof err), STORAGE_OK);
    snapshot_take(f, ORIGINAL.sop, &before);
    /* A new study of the same Patient ID under another name and sex. */
    struct sent s = {OTHER_STUDY, OTHER_SERIES, "1.2.3.9", "P1", "ROE^RICHARD", "19700101", "M"};
    assert_int_equal(commit_sent(f->st, &s, "b", 2000, err, sizeof err), STORAGE_EINTEGRITY);
    assert_string_equal(err, "PatientID already stored with another PatientName, PatientSex");
    assert_unchanged(f, ORIGINAL.sop, &before);
    s.name = "DOE^JANE";
    s.sex = "F";
    s.birth_date = "19800101";
    assert_int_equal(commit_sent(f->st, &s, "b", 2000, err, sizeof err), STORAGE_EINTEGRITY);
    assert_string_equal(err, "PatientID already stored with another PatientBirthDate");
    assert_unchanged(f, ORIGINAL.sop, &before);

    /* Values missing on either side are not a contradiction, nor is case;
     * what the store knows is kept. */
    s.name = "doe^jane";
    s.birth_date = NULL;
    s.sex = "";
    assert_int_equal(commit_sent(f->st, &s, "b", 3000, err, sizeof err), STORAGE_OK);
    struct tally t = tally(f->st);
    assert_int_equal(t.studies, 2);
    struct attr_series *rows;
    size_t n;
    assert_int_equal(storage_study_series(f->st, OTHER_STUDY, &rows, &n), STORAGE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].value[ATTR_PATIENT_BIRTH_DATE], "19700101");
    assert_string_equal(rows[0].value[ATTR_PATIENT_SEX], "F");
    storage_series_free(rows, n);
}

static void test_instances_without_a_patient_id_are_not_compared(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct sent a = {STUDY, SERIES, "1.2.3.1", NULL, "ANON^ONE", NULL, "F"};
    struct sent b = {OTHER_STUDY, OTHER_SERIES, "1.2.3.2", "", "ANON^TWO", NULL, "M"};
    assert_int_equal(commit_sent(f->st, &a, "a", 1000, err, sizeof err), STORAGE_OK);
    assert_int_equal(commit_sent(f->st, &b, "b", 2000, err, sizeof err), STORAGE_OK);
    assert_int_equal(tally(f->st).studies, 2);
}

static void test_an_identical_resend_stays_idempotent(void **state)
{
    struct fixture *f = *state;
    char err[256], path[512];
    assert_int_equal(commit_sent(f->st, &ORIGINAL, "one", 1000, err, sizeof err), STORAGE_OK);
    assert_int_equal(commit_sent(f->st, &ORIGINAL, "two", 2000, err, sizeof err), STORAGE_OK);
    /* The next instance of the series after a resend is checked afresh. */
    struct sent s = ORIGINAL;
    s.sop = "1.2.3.2";
    assert_int_equal(commit_sent(f->st, &s, "three", 3000, err, sizeof err), STORAGE_OK);
    assert_int_equal(storage_instance_path(f->st, ORIGINAL.sop, path, sizeof path), STORAGE_OK);
    assert_string_equal(slurp(path), "two");
    struct tally t = tally(f->st);
    assert_int_equal(t.studies, 1);
    assert_int_equal(t.instances, 2);
}

/* A resend of the very bytes stored (a sender that got no answer from a
 * node killed between commit and response) changes nothing: its completed
 * study is not received again, to be processed and sent again. */
static void test_a_resend_of_the_same_bytes_leaves_its_completed_study_alone(void **state)
{
    struct fixture *f = *state;
    char first[512], now[512];
    int q = -1;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "same bytes", 1000), STORAGE_OK);
    assert_int_equal(storage_instance_path(f->st, "1.2.3.1", first, sizeof first), STORAGE_OK);
    struct plan p = {0};
    assert_int_equal(storage_commit_plan(f->st, STUDY, 1000, &p, 0, 5000, &q), STORAGE_OK);
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "same bytes", 9000), STORAGE_OK);
    assert_string_equal(tally(f->st).state, "complete");
    assert_int_equal(storage_instance_path(f->st, "1.2.3.1", now, sizeof now), STORAGE_OK);
    assert_string_equal(now, first);
    assert_string_equal(slurp(now), "same bytes");
    /* Other bytes under the same UID are a new version: received again. */
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "other bytes", 10000),
                     STORAGE_OK);
    assert_string_equal(tally(f->st).state, "receiving");
    assert_int_equal(storage_instance_path(f->st, "1.2.3.1", now, sizeof now), STORAGE_OK);
    assert_string_equal(slurp(now), "other bytes");
    assert_int_equal(tally(f->st).instances, 1);
}

static void test_quarantine_keeps_a_refused_instance_aside_unindexed(void **state)
{
    struct fixture *f = *state;
    char err[256], dir[512], path[512];
    struct snapshot before;
    storage_set_conflict_policy(f->st, STORAGE_CONFLICT_QUARANTINE);
    assert_int_equal(commit_sent(f->st, &ORIGINAL, "original", 1000, err, sizeof err),
                     STORAGE_OK);
    snapshot_take(f, ORIGINAL.sop, &before);
    struct sent s = ORIGINAL;
    s.study = OTHER_STUDY;
    s.series = OTHER_SERIES;
    assert_int_equal(commit_sent(f->st, &s, "hostile", 2000, err, sizeof err),
                     STORAGE_EINTEGRITY);
    assert_unchanged(f, ORIGINAL.sop, &before);
    snprintf(path, sizeof path, "%s/quarantine/%s.dcm", f->dir, ORIGINAL.sop);
    assert_string_equal(slurp(path), "hostile");
    snprintf(dir, sizeof dir, "%s/quarantine", f->dir);
    assert_int_equal(count_entries(dir), 1);
}

static unsigned mode_of(const char *dir, const char *name)
{
    char path[1024];
    struct stat sb;
    snprintf(path, sizeof path, "%s%s%s", dir, name ? "/" : "", name ? name : "");
    if (stat(path, &sb) != 0)
        return 0;
    return (unsigned)sb.st_mode & 07777;
}

static void test_what_storage_creates_is_private_whatever_the_umask(void **state)
{
    struct fixture *f = *state;
    char dir[300], err[256], path[512];
    mode_t old = umask(0);
    snprintf(dir, sizeof dir, "%s/fresh", f->dir);
    struct storage *st;
    assert_int_equal(storage_open(dir, NULL, NULL, &st, err, sizeof err), STORAGE_OK);
    assert_int_equal(mode_of(dir, NULL), 0750);
    assert_int_equal(mode_of(dir, "tmp"), 0750);
    assert_int_equal(mode_of(dir, "instances"), 0750);
    assert_int_equal(mode_of(dir, "ainode.db"), 0640);
    /* The temporary file, written as any writer would (0666 asked). */
    assert_int_equal(storage_temp_path(st, path, sizeof path), STORAGE_OK);
    assert_int_equal(mode_of(path, NULL), 0640);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs("bytes", fp);
    fclose(fp);
    assert_int_equal(mode_of(path, NULL), 0640);
    struct storage_instance inst;
    make_instance(&inst, SERIES, "1.2.3.1", 1000);
    assert_int_equal(storage_commit(st, path, &inst, err, sizeof err), STORAGE_OK);
    char stored[512];
    assert_int_equal(storage_instance_path(st, "1.2.3.1", stored, sizeof stored), STORAGE_OK);
    assert_int_equal(mode_of(stored, NULL), 0640);
    snprintf(path, sizeof path, "%s/instances/%s", dir, STUDY);
    assert_int_equal(mode_of(path, NULL), 0750);
    assert_int_equal(mode_of(path, SERIES), 0750);
    /* The database's journal files take its mode. */
    assert_int_equal(mode_of(dir, "ainode.db-wal"), 0640);
    assert_int_equal(mode_of(dir, "ainode.db-shm"), 0640);
    /* Results: written by storage, and adopted from another writer. */
    char result[512], tmp[512];
    assert_int_equal(storage_write_result(st, 7, "{}", "x", 1, result, sizeof result, err,
                                          sizeof err),
                     STORAGE_OK);
    assert_int_equal(mode_of(result, NULL), 0640);
    assert_int_equal(mode_of(dir, "results"), 0750);
    snprintf(result, sizeof result, "%s/results/7.labels.gz", dir);
    assert_int_equal(mode_of(result, NULL), 0640);
    assert_int_equal(storage_result_temp(st, "7.seg.dcm", tmp, sizeof tmp), STORAGE_OK);
    fp = fopen(tmp, "wb");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(storage_adopt_result(st, tmp, "7.seg.dcm", result, sizeof result, err,
                                          sizeof err),
                     STORAGE_OK);
    assert_int_equal(mode_of(result, NULL), 0640);
    storage_close(st);
    umask(old);
}

static void test_a_data_dir_every_user_may_write_is_refused(void **state)
{
    struct fixture *f = *state;
    char dir[300], err[512] = "";
    snprintf(dir, sizeof dir, "%s/open", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, 0777), 0);
    struct storage *st = NULL;
    assert_int_equal(storage_open(dir, NULL, NULL, &st, err, sizeof err), STORAGE_EACCESS);
    assert_null(st);
    assert_non_null(strstr(err, dir));
    assert_non_null(strstr(err, "0777"));
    char db[400];
    snprintf(db, sizeof db, "%s/ainode.db", dir);
    assert_int_not_equal(access(db, F_OK), 0);
    /* Readable by every user: used (with a warning). */
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(storage_open(dir, NULL, NULL, &st, err, sizeof err), STORAGE_OK);
    storage_close(st);
}

static void test_a_database_of_an_earlier_release_is_made_private(void **state)
{
    struct fixture *f = *state;
    char db[400], err[256];
    storage_close(f->st);
    f->st = NULL;
    snprintf(db, sizeof db, "%s/ainode.db", f->dir);
    assert_int_equal(chmod(db, 0644), 0);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_int_equal(mode_of(db, NULL), 0640);
}

static void test_idle_study_completes_and_reopens_on_new_instance(void **state)
{
    struct fixture *f = *state;
    int moved = -1, jobs = -1;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 10000), STORAGE_OK);
    complete_due(f->st, 14999, 5, NULL, NULL, &moved, &jobs);
    assert_int_equal(moved, 0);
    assert_string_equal(tally(f->st).state, "receiving");
    complete_due(f->st, 15000, 5, NULL, NULL, &moved, &jobs);
    assert_int_equal(moved, 1);
    assert_string_equal(tally(f->st).state, "complete");
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.2", "b", 16000), STORAGE_OK);
    assert_string_equal(tally(f->st).state, "receiving");
    assert_int_equal(tally(f->st).instances, 2);
}

static void test_open_empties_temporary_directory(void **state)
{
    struct fixture *f = *state;
    char temp[512], err[256];
    write_temp(f->st, "half-written", temp, sizeof temp);
    storage_close(f->st);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_int_not_equal(access(temp, F_OK), 0);
}

/* What a crash leaves: a child opens the store, commits one instance,
 * links a second file in place without indexing it (a crash between link
 * and commit, or a power cut that took its row), and dies without
 * closing the store. Returns the unindexed file's path. */
static void crash_with_unindexed_file(struct fixture *f, const char *name, char *orphan,
                                      size_t len)
{
    char err[256];
    storage_close(f->st);
    f->st = NULL;
    snprintf(orphan, len, "%s/instances/%s/%s/%s", f->dir, STUDY, SERIES, name);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct storage *st;
        if (storage_open(f->dir, NULL, NULL, &st, err, sizeof err) != STORAGE_OK)
            _exit(2);
        if (commit_content(st, SERIES, "1.2.3.1", "acknowledged", 1000) != STORAGE_OK)
            _exit(3);
        FILE *fp = fopen(orphan, "w");
        if (!fp)
            _exit(4);
        fputs("complete but unindexed", fp);
        fclose(fp);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(access(orphan, F_OK), 0);
}

/* Stands in for the DICOM reader: a file reads as instance 1.2.3.2 of
 * STUDY/SERIES unless its content says otherwise. */
static int read_fake(void *ud, const char *path, char **values, char **ts, char **calling)
{
    const char *sop = ud;
    char *content = slurp(path);
    if (!content || strcmp(content, "complete but unindexed") != 0)
        return -1;
    for (int i = 0; i < ATTR_COUNT; i++)
        values[i] = NULL;
    values[ATTR_SOP_CLASS_UID] = strdup(CT_CLASS);
    values[ATTR_SOP_INSTANCE_UID] = strdup(sop);
    values[ATTR_STUDY_INSTANCE_UID] = strdup(STUDY);
    values[ATTR_SERIES_INSTANCE_UID] = strdup(SERIES);
    values[ATTR_MODALITY] = strdup("CT");
    *ts = strdup(EXPLICIT_LE);
    *calling = strdup("MODALITY");
    return 0;
}

static int read_fails(void *ud, const char *path, char **values, char **ts, char **calling)
{
    (void)ud, (void)path, (void)values, (void)ts, (void)calling;
    return -1;
}

static void test_unclean_stop_reindexes_complete_unindexed_files(void **state)
{
    struct fixture *f = *state;
    char orphan[512], path[512], err[256];
    int reindexed, removed;
    crash_with_unindexed_file(f, "1.2.3.2.dcm", orphan, sizeof orphan);
    assert_int_equal(storage_open(f->dir, read_fake, "1.2.3.2", &f->st, err, sizeof err),
                     STORAGE_OK);
    storage_repair_counts(f->st, &reindexed, &removed);
    assert_int_equal(reindexed, 1);
    assert_int_equal(removed, 0);
    assert_int_equal(storage_instance_path(f->st, "1.2.3.2", path, sizeof path), STORAGE_OK);
    assert_string_equal(path, orphan);
    assert_int_equal(storage_instance_path(f->st, "1.2.3.1", path, sizeof path), STORAGE_OK);
    assert_string_equal(slurp(path), "acknowledged");
    assert_int_equal(tally(f->st).instances, 2);
}

static void test_unclean_stop_removes_unreadable_unindexed_files(void **state)
{
    struct fixture *f = *state;
    char orphan[512], kept[512], err[256];
    int reindexed, removed;
    crash_with_unindexed_file(f, "1.2.3.2.dcm", orphan, sizeof orphan);
    assert_int_equal(storage_open(f->dir, read_fails, NULL, &f->st, err, sizeof err),
                     STORAGE_OK);
    storage_repair_counts(f->st, &reindexed, &removed);
    assert_int_equal(reindexed, 0);
    assert_int_equal(removed, 1);
    assert_int_not_equal(access(orphan, F_OK), 0);
    assert_int_equal(storage_instance_path(f->st, "1.2.3.1", kept, sizeof kept), STORAGE_OK);
    assert_string_equal(slurp(kept), "acknowledged");
    assert_int_equal(tally(f->st).instances, 1);
}

static void test_repair_removes_a_file_whose_uids_do_not_match_its_place(void **state)
{
    struct fixture *f = *state;
    char orphan[512], err[256];
    int reindexed, removed;
    /* Its content names instance 1.2.3.9, its file name says 1.2.3.2. */
    crash_with_unindexed_file(f, "1.2.3.2.dcm", orphan, sizeof orphan);
    assert_int_equal(storage_open(f->dir, read_fake, "1.2.3.9", &f->st, err, sizeof err),
                     STORAGE_OK);
    storage_repair_counts(f->st, &reindexed, &removed);
    assert_int_equal(reindexed, 0);
    assert_int_equal(removed, 1);
    assert_int_not_equal(access(orphan, F_OK), 0);
}

static void test_clean_stop_skips_the_repair(void **state)
{
    struct fixture *f = *state;
    char stray[512], err[256];
    int reindexed, removed;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    storage_close(f->st);
    snprintf(stray, sizeof stray, "%s/instances/%s/%s/1.2.3.2.dcm", f->dir, STUDY, SERIES);
    FILE *fp = fopen(stray, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(storage_open(f->dir, read_fails, NULL, &f->st, err, sizeof err),
                     STORAGE_OK);
    storage_repair_counts(f->st, &reindexed, &removed);
    assert_int_equal(reindexed + removed, 0);
    assert_int_equal(access(stray, F_OK), 0);
}

struct job_list {
    int n;
    char state[8][16];
    char model[8][16];
    int attempts[8];
    int64_t id[8];
    char stage[8][16];
    char error[8][128];
    char model_sha256[8][65];
    char manifest_sha256[8][65];
    int64_t finished_ms[8];
};

static int collect_job(void *ud, const struct storage_job_row *j)
{
    struct job_list *l = ud;
    if (l->n < 8) {
        snprintf(l->model_sha256[l->n], 65, "%s", j->model_sha256 ? j->model_sha256 : "");
        snprintf(l->manifest_sha256[l->n], 65, "%s",
                 j->manifest_sha256 ? j->manifest_sha256 : "");
        l->finished_ms[l->n] = j->finished_ms;
        snprintf(l->state[l->n], 16, "%s", j->state);
        snprintf(l->model[l->n], 16, "%s", j->model);
        l->attempts[l->n] = j->attempts;
        l->id[l->n] = j->id;
        snprintf(l->stage[l->n], 16, "%s", j->stage ? j->stage : "");
        snprintf(l->error[l->n], 128, "%s", j->error ? j->error : "");
        l->n++;
    }
    return 0;
}

static struct job_list list_jobs(struct storage *st)
{
    struct job_list l;
    memset(&l, 0, sizeof l);
    assert_int_equal(storage_foreach_job(st, collect_job, &l), STORAGE_OK);
    return l;
}

static void complete_with_jobs(struct fixture *f)
{
    int moved, jobs, calls = 0;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    assert_int_equal(commit_content(f->st, SERIES2, "1.2.3.2", "b", 1000), STORAGE_OK);
    complete_due(f->st, 100000, 5, plan_ct, &calls, &moved, &jobs);
    assert_int_equal(moved, 1);
    assert_int_equal(calls, 2);
    assert_int_equal(jobs, 4);
}

static void test_completion_queues_the_planned_jobs(void **state)
{
    struct fixture *f = *state;
    complete_with_jobs(f);
    struct job_list l = list_jobs(f->st);
    assert_int_equal(l.n, 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(l.state[i], "queued");
    /* A second pass finds nothing new to complete or queue. */
    int moved, jobs, calls = 0;
    complete_due(f->st, 200000, 5, plan_ct, &calls, &moved, &jobs);
    assert_int_equal(moved + jobs + calls, 0);
}

static void test_a_job_is_claimed_once_until_its_lease_expires(void **state)
{
    struct fixture *f = *state;
    complete_with_jobs(f);
    struct storage_job a, b, c;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 500, &a), STORAGE_OK);
    assert_string_equal(a.series_uid, SERIES);
    assert_int_equal(a.attempts, 1);
    assert_int_equal(storage_job_claim(f->st, "seg", "w2", 1100, 500, &b), STORAGE_OK);
    assert_int_not_equal(a.id, b.id);
    /* Both seg jobs are held: nothing left until a lease runs out. */
    assert_int_equal(storage_job_claim(f->st, "seg", "w3", 1200, 500, &c), STORAGE_ENOTFOUND);
    assert_int_equal(storage_job_renew(f->st, a.id, "w1", 5000), STORAGE_OK);
    storage_job_clear(&c);
    assert_int_equal(storage_job_claim(f->st, "seg", "w3", 1700, 500, &c), STORAGE_OK);
    assert_int_equal(c.id, b.id); /* w2's lease expired at 1600, w1 renewed */
    assert_int_equal(c.attempts, 2);
    /* The worker that lost the job can neither renew nor finish it. */
    assert_int_equal(storage_job_renew(f->st, b.id, "w2", 9000), STORAGE_ENOTFOUND);
    assert_int_equal(storage_job_finish(f->st, b.id, "w2", 1800, NULL, "r", "{}", NULL, 0),
                     STORAGE_ENOTFOUND);
    assert_int_equal(storage_job_finish(f->st, c.id, "w3", 1800, NULL, "r", "{}", NULL, 0), STORAGE_OK);
    assert_int_equal(storage_job_finish(f->st, a.id, "w1", 1900, "bad input", NULL, NULL, NULL, 0),
                     STORAGE_OK);
    struct job_list l = list_jobs(f->st);
    int done = 0, failed = 0;
    for (int i = 0; i < l.n; i++) {
        done += !strcmp(l.state[i], "done");
        failed += !strcmp(l.state[i], "failed");
    }
    assert_int_equal(done, 1);
    assert_int_equal(failed, 1);
    storage_job_clear(&a);
    storage_job_clear(&b);
    storage_job_clear(&c);
}

static void test_jobs_left_running_are_queued_again_at_open(void **state)
{
    struct fixture *f = *state;
    char err[256];
    complete_with_jobs(f);
    struct storage_job a;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 3600000, &a), STORAGE_OK);
    storage_close(f->st);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    struct storage_job b;
    assert_int_equal(storage_job_claim(f->st, "seg", "w9", 2000, 1000, &b), STORAGE_OK);
    assert_int_equal(b.id, a.id);
    assert_int_equal(b.attempts, 2);
    storage_job_clear(&a);
    storage_job_clear(&b);
}

/* The row of job ID in L, or -1. */
static int job_index(const struct job_list *l, int64_t id)
{
    for (int i = 0; i < l->n; i++)
        if (l->id[i] == id)
            return i;
    return -1;
}

/* Plans "seg" for every series, not applicable for SERIES2. */
static void plan_seg_accepting_one(void *ud, const struct attr_series *s, struct plan *p)
{
    (void)ud;
    const char *series = s->value[ATTR_SERIES_INSTANCE_UID];
    const char *pacs = "pacs";
    assert_int_equal(plan_add_job(p, series, "seg", PLAN_PRIORITY_NORMAL, &pacs, 1), 0);
    if (!strcmp(series, SERIES2))
        assert_int_equal(plan_set_not_applicable(p, series, "seg",
                                                 "BodyPartExamined is KNEE; the model accepts "
                                                 "CHEST"),
                         0);
}

static void test_a_not_applicable_job_is_recorded_with_its_reason_and_never_runs(void **state)
{
    struct fixture *f = *state;
    char err[256];
    int moved, jobs;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    assert_int_equal(commit_content(f->st, SERIES2, "1.2.3.2", "b", 1000), STORAGE_OK);
    complete_due(f->st, 100000, 5, plan_seg_accepting_one, NULL, &moved, &jobs);
    assert_int_equal(moved, 1);
    assert_int_equal(jobs, 1); /* only the applicable one is queued */
    struct job_list l = list_jobs(f->st);
    assert_int_equal(l.n, 2);
    int na = !strcmp(l.state[0], "queued") ? 1 : 0;
    assert_string_equal(l.state[!na], "queued");
    assert_string_equal(l.state[na], STORAGE_JOB_NOT_APPLICABLE);
    assert_string_equal(l.error[na], "BodyPartExamined is KNEE; the model accepts CHEST");
    assert_int_equal(l.finished_ms[na], 100000);
    assert_int_equal(l.attempts[na], 0);

    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 200000, 500, &j), STORAGE_OK);
    assert_string_equal(j.series_uid, SERIES);
    storage_job_clear(&j);
    assert_int_equal(storage_job_claim(f->st, "seg", "w2", 200000, 500, &j), STORAGE_ENOTFOUND);
    assert_int_equal(storage_job_retry(f->st, l.id[na]), STORAGE_ENOTFOUND);
    /* nor after a restart (which queues the running one again) */
    storage_close(f->st);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_int_equal(storage_job_claim(f->st, "seg", "w3", 900000, 500, &j), STORAGE_OK);
    assert_string_equal(j.series_uid, SERIES); /* the other one, queued again */
    storage_job_clear(&j);
    assert_int_equal(storage_job_claim(f->st, "seg", "w4", 900100, 500, &j), STORAGE_ENOTFOUND);
    l = list_jobs(f->st);
    assert_string_equal(l.state[na], STORAGE_JOB_NOT_APPLICABLE);
    assert_int_equal(l.attempts[na], 0);
}

static void test_a_job_records_the_identity_of_the_model_it_runs_with(void **state)
{
    struct fixture *f = *state;
    complete_with_jobs(f);
    static const char model[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    static const char manifest[] =
        "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 500, &j), STORAGE_OK);
    struct job_list l = list_jobs(f->st);
    int i = job_index(&l, j.id);
    assert_string_equal(l.model_sha256[i], ""); /* unknown until it starts */
    /* only the job's holder records it */
    assert_int_equal(storage_job_identity(f->st, j.id, "w2", model, manifest), STORAGE_ENOTFOUND);
    assert_int_equal(storage_job_identity(f->st, j.id, "w1", model, manifest), STORAGE_OK);
    assert_int_equal(storage_job_finish(f->st, j.id, "w1", 1100, NULL, "r", "{}", NULL, 0),
                     STORAGE_OK);
    l = list_jobs(f->st);
    assert_string_equal(l.state[i], "done");
    assert_string_equal(l.model_sha256[i], model);
    assert_string_equal(l.manifest_sha256[i], manifest);
    storage_job_clear(&j);
}

/* What a node dying while job "seg" is in STAGE leaves: the job claimed
 * by "w1", inside the stage, and the store closed without a word about
 * it. Returns the job's id. */
static int64_t die_inside_stage(struct fixture *f, const char *stage, int64_t now)
{
    struct storage_job j;
    char err[256];
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", now, 3600000, &j), STORAGE_OK);
    assert_int_equal(storage_job_stage(f->st, j.id, "w1", stage, now + 1), STORAGE_OK);
    struct job_list l = list_jobs(f->st);
    assert_string_equal(l.stage[job_index(&l, j.id)], stage);
    int64_t id = j.id;
    storage_job_clear(&j);
    storage_close(f->st);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    return id;
}

static void test_a_job_the_node_stopped_inside_runs_again_then_is_quarantined(void **state)
{
    struct fixture *f = *state;
    complete_with_jobs(f);
    /* Once: the cause is unknown (a kill, a power cut), so it runs again. */
    int64_t id = die_inside_stage(f, "inference", 1000);
    struct job_list l = list_jobs(f->st);
    int i = job_index(&l, id);
    assert_string_equal(l.state[i], "queued");
    assert_string_equal(l.stage[i], "");
    /* Twice: quarantined with its reason, never claimed again. */
    assert_int_equal(die_inside_stage(f, "inference", 2000), id);
    l = list_jobs(f->st);
    i = job_index(&l, id);
    assert_string_equal(l.state[i], "quarantined");
    assert_string_equal(l.error[i], "the node stopped during inference 2 times");
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w2", 3000, 1000, &j), STORAGE_OK);
    assert_int_not_equal(j.id, id); /* the other series' job */
    storage_job_clear(&j);
    assert_int_equal(storage_job_claim(f->st, "seg", "w2", 3000, 1000, &j), STORAGE_ENOTFOUND);
    char err[256];
    storage_close(f->st);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_string_equal(list_jobs(f->st).state[i], "quarantined");
    assert_int_equal(storage_job_claim(f->st, "seg", "w2", 4000, 1000, &j), STORAGE_OK);
    assert_int_not_equal(j.id, id); /* the other one, given back by the stop */
    storage_job_clear(&j);
    assert_int_equal(storage_job_claim(f->st, "seg", "w2", 4000, 1000, &j), STORAGE_ENOTFOUND);

    /* Retried by hand: queued as new, and runs. */
    assert_int_equal(storage_job_retry(f->st, id), STORAGE_OK);
    assert_int_equal(storage_job_retry(f->st, id), STORAGE_ENOTFOUND);
    l = list_jobs(f->st);
    assert_string_equal(l.state[i], "queued");
    assert_string_equal(l.error[i], "");
    assert_int_equal(storage_job_claim(f->st, "seg", "w2", 5000, 1000, &j), STORAGE_OK);
    assert_int_equal(j.id, id);
    assert_int_equal(j.attempts, 1);
    storage_job_clear(&j);
}

static void test_a_job_named_in_the_crash_record_is_quarantined_at_once(void **state)
{
    struct fixture *f = *state;
    complete_with_jobs(f);
    struct storage_job other;
    assert_int_equal(storage_job_claim(f->st, "other", "w2", 1000, 3600000, &other), STORAGE_OK);
    assert_int_equal(storage_job_stage(f->st, other.id, "w2", "decode", 1001), STORAGE_OK);
    /* What the dying node writes: the job of the crashing worker. */
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 3600000, &j), STORAGE_OK);
    assert_int_equal(storage_job_stage(f->st, j.id, "w1", "results", 1002), STORAGE_OK);
    char record[512], err[256];
    snprintf(record, sizeof record, "%s", storage_crash_record_path(f->st));
    FILE *fp = fopen(record, "w");
    assert_non_null(fp);
    fprintf(fp, "%lld %d\n", (long long)j.id, SIGSEGV);
    fclose(fp);
    storage_close(f->st);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    struct job_list l = list_jobs(f->st);
    assert_string_equal(l.state[job_index(&l, j.id)], "quarantined");
    assert_string_equal(l.error[job_index(&l, j.id)], "the node crashed (SIGSEGV) during results");
    /* The other one was inside a stage too, but not the one crashing. */
    assert_string_equal(l.state[job_index(&l, other.id)], "queued");
    assert_int_not_equal(access(record, F_OK), 0);
    storage_job_clear(&j);
    storage_job_clear(&other);
}

static void test_a_stage_left_or_a_job_given_back_is_never_quarantined(void **state)
{
    struct fixture *f = *state;
    char err[256];
    complete_with_jobs(f);
    for (int round = 0; round < STORAGE_JOB_MAX_STOPS + 1; round++) {
        struct storage_job j;
        assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 3600000, &j), STORAGE_OK);
        assert_int_equal(storage_job_stage(f->st, j.id, "w1", "inference", 1001), STORAGE_OK);
        if (round == 0) {
            /* Died between stages. */
            assert_int_equal(storage_job_stage(f->st, j.id, "w1", NULL, 1002), STORAGE_OK);
        } else {
            /* A clean stop gives the job back. */
            assert_int_equal(storage_job_release(f->st, j.id, "w1"), STORAGE_OK);
        }
        storage_job_clear(&j);
        storage_close(f->st);
        assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
        struct job_list l = list_jobs(f->st);
        for (int i = 0; i < l.n; i++)
            assert_string_not_equal(l.state[i], "quarantined");
    }
    /* Someone else's job is not this owner's to mark. */
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 3600000, &j), STORAGE_OK);
    assert_int_equal(storage_job_stage(f->st, j.id, "w9", "inference", 1001), STORAGE_ENOTFOUND);
    assert_int_equal(storage_job_retry(f->st, j.id), STORAGE_ENOTFOUND);
    storage_job_clear(&j);
}

static void test_a_job_lost_too_often_fails(void **state)
{
    struct fixture *f = *state;
    complete_with_jobs(f);
    struct storage_job j;
    int64_t t = 1000;
    for (int i = 1; i <= STORAGE_JOB_MAX_ATTEMPTS; i++, t += 10) {
        assert_int_equal(storage_job_claim(f->st, "other", "w", t, 1, &j), STORAGE_OK);
        assert_int_equal(j.attempts, i);
    }
    /* The first job's next claim exceeds the limit: it fails, and the
     * claim moves on to the other job of that model. */
    int64_t first = j.id;
    assert_int_equal(storage_job_claim(f->st, "other", "w", t + 100, 1, &j), STORAGE_OK);
    (void)first;
    struct job_list l = list_jobs(f->st);
    int failed = 0;
    for (int i = 0; i < l.n; i++)
        if (!strcmp(l.state[i], "failed")) {
            failed++;
            assert_int_equal(l.attempts[i], STORAGE_JOB_MAX_ATTEMPTS + 1);
        }
    assert_int_equal(failed, 1);
}

struct outbox_list {
    int n;
    int64_t id[8];
    char state[8][16];
    char dest[8][16];
    int attempts[8];
};

static int collect_outbox(void *ud, const struct storage_outbox_item *it)
{
    struct outbox_list *l = ud;
    if (l->n < 8) {
        l->id[l->n] = it->id;
        snprintf(l->state[l->n], 16, "%s", it->state);
        snprintf(l->dest[l->n], 16, "%s", it->destination);
        l->attempts[l->n] = it->attempts;
        l->n++;
    }
    return 0;
}

static void test_a_finished_job_puts_its_results_in_the_outbox(void **state)
{
    struct fixture *f = *state;
    complete_with_jobs(f);
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 500, &j), STORAGE_OK);
    assert_int_equal(j.n_destinations, 1);
    assert_string_equal(j.destinations[0], "pacs");
    const struct storage_send_item items[] = {
        {"pacs", "seg", "/r/1.seg.dcm", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.3.10", EXPLICIT_LE},
        {"pacs", "sr", "/r/1.sr.dcm", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.3.11", EXPLICIT_LE},
    };
    assert_int_equal(storage_job_finish(f->st, j.id, "w1", 1100, NULL, "r", "{}", items, 2),
                     STORAGE_OK);
    storage_job_clear(&j);
    assert_int_equal(j.n_destinations, 0);
    struct outbox_list due;
    memset(&due, 0, sizeof due);
    assert_int_equal(storage_outbox_due(f->st, 1100, collect_outbox, &due), STORAGE_OK);
    assert_int_equal(due.n, 2);
    assert_string_equal(due.dest[0], "pacs");

    /* A failed attempt waits for its next time; the sent one is done. */
    assert_int_equal(storage_outbox_record(f->st, due.id[0], 1200, 0, "refused", 5000),
                     STORAGE_OK);
    assert_int_equal(storage_outbox_record(f->st, due.id[1], 1200, 1, NULL, 0), STORAGE_OK);
    memset(&due, 0, sizeof due);
    assert_int_equal(storage_outbox_due(f->st, 4999, collect_outbox, &due), STORAGE_OK);
    assert_int_equal(due.n, 0);
    assert_int_equal(storage_outbox_due(f->st, 5000, collect_outbox, &due), STORAGE_OK);
    assert_int_equal(due.n, 1);
    assert_int_equal(due.attempts[0], 1);

    /* Dead-lettered, then re-queued with its attempts reset. */
    assert_int_equal(storage_outbox_record(f->st, due.id[0], 5100, 0, "refused", -1),
                     STORAGE_OK);
    memset(&due, 0, sizeof due);
    assert_int_equal(storage_outbox_due(f->st, 999999, collect_outbox, &due), STORAGE_OK);
    assert_int_equal(due.n, 0);
    int n = 0;
    assert_int_equal(storage_outbox_retry(f->st, -1, 6000, &n), STORAGE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(storage_outbox_due(f->st, 6000, collect_outbox, &due), STORAGE_OK);
    assert_int_equal(due.n, 1);
    assert_int_equal(due.attempts[0], 0);
    struct outbox_list all;
    memset(&all, 0, sizeof all);
    assert_int_equal(storage_foreach_outbox(f->st, collect_outbox, &all), STORAGE_OK);
    assert_int_equal(all.n, 2);
    assert_string_equal(all.state[1], "sent");
}

static void test_a_failed_job_sends_nothing(void **state)
{
    struct fixture *f = *state;
    complete_with_jobs(f);
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 500, &j), STORAGE_OK);
    const struct storage_send_item item = {"pacs", "seg", "/r/1.seg.dcm", "1.2", "1.3", "1.4"};
    assert_int_equal(storage_job_finish(f->st, j.id, "w1", 1100, "bad", NULL, NULL, &item, 1),
                     STORAGE_OK);
    storage_job_clear(&j);
    struct outbox_list all;
    memset(&all, 0, sizeof all);
    assert_int_equal(storage_foreach_outbox(f->st, collect_outbox, &all), STORAGE_OK);
    assert_int_equal(all.n, 0);
}

static void test_readonly_open_sees_committed_rows(void **state)
{
    struct fixture *f = *state;
    struct storage *ro;
    char err[256];
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    assert_int_equal(storage_open_readonly(f->dir, &ro, err, sizeof err), STORAGE_OK);
    assert_int_equal(tally(ro).instances, 1);
    storage_close(ro);
}

/* The studies listed, in order, as "uid:state uid:state ...". */
static int list_study(void *ud, const struct storage_study *s)
{
    char *buf = ud;
    size_t n = strlen(buf);
    snprintf(buf + n, 512 - n, "%s%s:%s", n ? " " : "", s->study_uid, s->state);
    return 0;
}

static const char *studies(struct storage *st)
{
    static char buf[512];
    buf[0] = '\0';
    assert_int_equal(storage_foreach_study(st, list_study, buf), STORAGE_OK);
    return buf;
}

/* ---- the attribute table, schema versions, plan commit ------------------- */

/* A value of the right kind for attribute I, distinct per attribute. */
static const char *attr_value(int i, char *buf, size_t len)
{
    switch (i) {
    case ATTR_SOP_CLASS_UID: return CT_CLASS;
    case ATTR_SOP_INSTANCE_UID: return "1.2.3.1";
    case ATTR_STUDY_INSTANCE_UID: return STUDY;
    case ATTR_SERIES_INSTANCE_UID: return SERIES;
    }
    switch (attr_table[i].kind) {
    case ATTR_KIND_UID: snprintf(buf, len, "1.2.99.%d", i); break;
    case ATTR_KIND_INT:
    case ATTR_KIND_NUMBER: snprintf(buf, len, "%d", 100 + i); break;
    case ATTR_KIND_DATE: snprintf(buf, len, "202401%02d", i % 28 + 1); break;
    case ATTR_KIND_TIME: snprintf(buf, len, "1200%02d", i % 60); break;
    case ATTR_KIND_MULTI: snprintf(buf, len, "A%d\\B%d", i, i); break;
    default: snprintf(buf, len, "text %s", attr_table[i].keyword); break;
    }
    return buf;
}

static void test_every_attribute_is_indexed_and_in_the_series_rows(void **state)
{
    struct fixture *f = *state;
    char temp[512], err[256], bufs[ATTR_COUNT][80];
    struct storage_instance inst;
    make_instance(&inst, SERIES, "1.2.3.1", 1000);
    for (int i = 0; i < ATTR_COUNT; i++)
        inst.attr[i] = attr_value(i, bufs[i], sizeof bufs[i]);
    write_temp(f->st, "x", temp, sizeof temp);
    assert_int_equal(storage_commit(f->st, temp, &inst, err, sizeof err), STORAGE_OK);
    struct attr_series *rows;
    size_t n;
    assert_int_equal(storage_study_series(f->st, STUDY, &rows, &n), STORAGE_OK);
    assert_int_equal(n, 1);
    for (int i = 0; i < ATTR_COUNT; i++) {
        assert_non_null(rows[0].value[i]);
        assert_string_equal(rows[0].value[i], inst.attr[i]);
    }
    assert_string_equal(rows[0].calling_ae, "MODALITY");
    assert_string_equal(rows[0].called_ae, "AINODE");
    assert_string_equal(rows[0].source_address, "127.0.0.1");
    assert_int_equal(rows[0].instances, 1);
    storage_series_free(rows, n);
    assert_int_equal(storage_study_series(f->st, "1.2.404", &rows, &n), STORAGE_OK);
    assert_int_equal(n, 0);
    storage_series_free(rows, n);
}

static void test_series_rows_take_the_first_instance_by_number(void **state)
{
    struct fixture *f = *state;
    char temp[512], err[256];
    const char *numbers[] = {"10", "2", NULL};
    const char *sops[] = {"1.2.3.1", "1.2.3.2", "1.2.3.3"};
    const char *thickness[] = {"5", "1.25", "3"};
    for (int i = 0; i < 3; i++) {
        struct storage_instance inst;
        make_instance(&inst, SERIES, sops[i], 1000 + i);
        inst.attr[ATTR_INSTANCE_NUMBER] = numbers[i];
        inst.attr[ATTR_SLICE_THICKNESS] = thickness[i];
        write_temp(f->st, "x", temp, sizeof temp);
        assert_int_equal(storage_commit(f->st, temp, &inst, err, sizeof err), STORAGE_OK);
    }
    struct attr_series *rows;
    size_t n;
    assert_int_equal(storage_study_series(f->st, STUDY, &rows, &n), STORAGE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].instances, 3);
    assert_string_equal(rows[0].value[ATTR_SOP_INSTANCE_UID], "1.2.3.2");
    assert_string_equal(rows[0].value[ATTR_SLICE_THICKNESS], "1.25");
    storage_series_free(rows, n);
}

#define V1_STUDY_A "1.2.826.0.1.3680043.8.498.10"
#define V1_STUDY_B "1.2.826.0.1.3680043.8.498.20"

/* Writes DATA_DIR/ainode.db from the SQL dump at tests/data/NAME/ainode.sql. */
static void load_dump(const char *dir, const char *name)
{
    char path[512], dbpath[512];
    const char *data = getenv("AINODE_TEST_DATA");
    assert_non_null(data);
    snprintf(path, sizeof path, "%s/%s/ainode.sql", data, name);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    static char sql[1 << 16];
    size_t n = fread(sql, 1, sizeof sql - 1, fp);
    fclose(fp);
    assert_true(n > 0 && n < sizeof sql - 1);
    sql[n] = '\0';
    snprintf(dbpath, sizeof dbpath, "%s/ainode.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static int user_version(const char *dir)
{
    char dbpath[512];
    snprintf(dbpath, sizeof dbpath, "%s/ainode.db", dir);
    sqlite3 *db;
    sqlite3_stmt *s;
    int v = -1;
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static int list_unmatched(void *ud, const char *study_uid, const char *series_uid,
                          const char *modality)
{
    char *buf = ud;
    size_t n = strlen(buf);
    snprintf(buf + n, 512 - n, "%s%s/%s/%s", n ? " " : "", study_uid, series_uid, modality);
    return 0;
}

static void test_a_store_of_the_first_release_is_migrated(void **state)
{
    struct fixture *f = *state;
    char err[256];
    storage_close(f->st);
    f->st = NULL;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir '%s'", f->dir, f->dir);
    assert_int_equal(system(cmd), 0);
    load_dump(f->dir, "store-v1");
    assert_int_equal(user_version(f->dir), 0);

    /* Status refuses to read it before the node migrated it (when there is
     * anything to migrate). */
    struct storage *ro;
    if (storage_schema_version() > 1) {
        assert_int_equal(storage_open_readonly(f->dir, &ro, err, sizeof err), STORAGE_EVERSION);
        assert_non_null(strstr(err, "migrate"));
    }

    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_int_equal(user_version(f->dir), storage_schema_version());

    /* The studies, as they were. */
    assert_string_equal(studies(f->st), V1_STUDY_A ":complete " V1_STUDY_B ":receiving");
    struct receiving_list r;
    memset(&r, 0, sizeof r);
    assert_int_equal(storage_foreach_receiving(f->st, collect_receiving, &r), STORAGE_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.uid[0], V1_STUDY_B);
    assert_int_equal(r.last[0], 1700000100000);

    /* The series rows: every level, the first instance by number. */
    struct attr_series *rows;
    size_t n;
    assert_int_equal(storage_study_series(f->st, V1_STUDY_A, &rows, &n), STORAGE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(rows[0].value[ATTR_SERIES_INSTANCE_UID], V1_STUDY_A ".1");
    assert_string_equal(rows[0].value[ATTR_SOP_INSTANCE_UID], V1_STUDY_A ".1.2");
    assert_string_equal(rows[0].value[ATTR_PATIENT_NAME], "Doe^Jane");
    assert_string_equal(rows[0].value[ATTR_PATIENT_ID], "P1");
    assert_string_equal(rows[0].value[ATTR_STUDY_DESCRIPTION], "CT Thorax");
    assert_string_equal(rows[0].value[ATTR_SERIES_DESCRIPTION], "Axial 1.25");
    assert_string_equal(rows[0].value[ATTR_IMAGE_TYPE], "ORIGINAL\\PRIMARY\\AXIAL");
    assert_string_equal(rows[0].value[ATTR_ROWS], "512");
    assert_string_equal(rows[0].value[ATTR_CONTRAST_BOLUS_AGENT], "IODINE");
    assert_string_equal(rows[0].calling_ae, "CT_ROOM1");
    assert_int_equal(rows[0].instances, 2);
    assert_int_equal(rows[1].instances, 2);
    assert_string_equal(rows[2].value[ATTR_MODALITY], "SR");
    storage_series_free(rows, n);

    /* Its queued job, its forwards and its unmatched series. */
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 1000, 500, &j), STORAGE_OK);
    assert_string_equal(j.study_uid, V1_STUDY_A);
    assert_string_equal(j.series_uid, V1_STUDY_A ".1");
    assert_int_equal(j.n_destinations, 2);
    assert_string_equal(j.destinations[0], "pacs");
    assert_string_equal(j.destinations[1], "archive");
    int64_t v1_job = j.id;
    storage_job_clear(&j);
    struct outbox_list all;
    memset(&all, 0, sizeof all);
    assert_int_equal(storage_foreach_outbox(f->st, collect_outbox, &all), STORAGE_OK);
    assert_int_equal(all.n, 2);
    assert_string_equal(all.dest[0], "pacs");
    assert_string_equal(all.state[1], "pending");
    char unmatched[512] = "";
    assert_int_equal(storage_foreach_unmatched(f->st, list_unmatched, unmatched), STORAGE_OK);
    assert_string_equal(unmatched, V1_STUDY_A "/" V1_STUDY_A ".3/SR");

    /* The receiving study completes on the migrated store. */
    struct plan p = {0};
    int q = -1;
    assert_int_equal(plan_add_forward(&p, V1_STUDY_B ".1", "archive"), 0);
    assert_int_equal(
        storage_commit_plan(f->st, V1_STUDY_B, 1700000100000, &p, 0, 1700000200000, &q),
        STORAGE_OK);
    plan_free(&p);
    assert_int_equal(q, 1);

    /* Its job, running on the migrated store, has its stage recorded and,
     * the node stopped inside it, runs again. */
    assert_int_equal(storage_job_stage(f->st, v1_job, "w1", "inference", 1001), STORAGE_OK);
    storage_close(f->st);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    struct job_list jl = list_jobs(f->st);
    assert_int_equal(jl.n, 1);
    assert_string_equal(jl.state[0], "queued");
    assert_string_equal(jl.stage[0], "");

    /* Reopened, it is at the current version and needs nothing. */
    storage_close(f->st);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_int_equal(storage_open_readonly(f->dir, &ro, err, sizeof err), STORAGE_OK);
    assert_string_equal(studies(ro), V1_STUDY_A ":complete " V1_STUDY_B ":complete");
    storage_close(ro);
}

static void test_a_store_of_a_newer_version_is_refused(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", dbpath[512], sql[64];
    storage_close(f->st);
    f->st = NULL;
    snprintf(dbpath, sizeof dbpath, "%s/ainode.db", f->dir);
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d", storage_schema_version() + 1);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err),
                     STORAGE_EVERSION);
    assert_null(f->st);
    assert_non_null(strstr(err, "newer ainode"));
    struct storage *ro;
    assert_int_equal(storage_open_readonly(f->dir, &ro, err, sizeof err), STORAGE_EVERSION);
    assert_int_equal(storage_open_admin(f->dir, &ro, err, sizeof err), STORAGE_EVERSION);
    /* Nothing was changed: still the newer version. */
    assert_int_equal(user_version(f->dir), storage_schema_version() + 1);
}

static void test_strerror_names_every_code(void **state)
{
    (void)state;
    for (int c = STORAGE_EACCESS; c <= STORAGE_OK; c++)
        assert_string_not_equal(storage_strerror(c), "unknown storage error");
    assert_string_equal(storage_strerror(STORAGE_ECONFLICT), "the study changed meanwhile");
}

static int64_t last_received(struct storage *st, const char *study)
{
    struct receiving_list l;
    memset(&l, 0, sizeof l);
    assert_int_equal(storage_foreach_receiving(st, collect_receiving, &l), STORAGE_OK);
    for (int i = 0; i < l.n; i++)
        if (!strcmp(l.uid[i], study))
            return l.last[i];
    return -1;
}

static void test_a_plan_against_a_stale_last_received_is_refused(void **state)
{
    struct fixture *f = *state;
    int calls = 0, q = -1;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    struct plan p = {0};
    plan_study(f->st, STUDY, plan_ct, &calls, &p);
    assert_int_equal(p.n_jobs, 2);
    assert_int_equal(storage_commit_plan(f->st, STUDY, 999, &p, 0, 100000, &q),
                     STORAGE_ECONFLICT);
    assert_int_equal(q, 0);
    assert_string_equal(tally(f->st).state, "receiving");
    assert_int_equal(list_jobs(f->st).n, 0);
    /* An unknown study, or one completed already, conflicts too. */
    assert_int_equal(storage_commit_plan(f->st, "1.2.404", 1000, &p, 0, 100000, &q),
                     STORAGE_ECONFLICT);
    assert_int_equal(storage_commit_plan(f->st, STUDY, 1000, &p, 0, 100000, &q), STORAGE_OK);
    assert_int_equal(q, 2);
    assert_int_equal(storage_commit_plan(f->st, STUDY, 1000, &p, 0, 100000, &q),
                     STORAGE_ECONFLICT);
    assert_int_equal(list_jobs(f->st).n, 2);
    plan_free(&p);
}

static void test_an_instance_arriving_while_planning_wins(void **state)
{
    struct fixture *f = *state;
    int calls = 0, moved, jobs;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    int64_t last = last_received(f->st, STUDY);
    struct plan p = {0};
    plan_study(f->st, STUDY, plan_ct, &calls, &p);
    /* Between reading the rows and committing the plan, another instance. */
    assert_int_equal(commit_content(f->st, SERIES2, "1.2.3.2", "b", 7000), STORAGE_OK);
    assert_int_equal(storage_commit_plan(f->st, STUDY, last, &p, 0, 8000, NULL),
                     STORAGE_ECONFLICT);
    plan_free(&p);
    assert_string_equal(tally(f->st).state, "receiving");
    assert_int_equal(list_jobs(f->st).n, 0);
    /* Later it completes with both series planned. */
    calls = 0;
    complete_due(f->st, 20000, 5, plan_ct, &calls, &moved, &jobs);
    assert_int_equal(moved, 1);
    assert_int_equal(calls, 2);
    assert_int_equal(jobs, 4);
    assert_string_equal(tally(f->st).state, "complete");
}

struct dir_sync_caller {
    struct file_dir_syncs *s;
    const char *dir;
    int failures, errnos;
};

static void *call_dir_sync(void *arg)
{
    struct dir_sync_caller *c = arg;
    for (int i = 0; i < 40; i++) {
        errno = 0;
        if (file_sync_dir_shared(c->s, c->dir) != 0) {
            c->failures++;
            c->errnos += errno == ENOENT;
        }
    }
    return NULL;
}

/* Concurrent commits into one directory share its flushes: every caller
 * returns once a flush begun after its call has ended, and a flush that
 * fails fails every caller it covered, with its errno. */
static void test_directory_flushes_are_shared_and_their_failures_too(void **state)
{
    struct fixture *f = *state;
    struct file_dir_syncs *s = file_dir_syncs_new();
    assert_non_null(s);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/not-there", f->dir);
    struct dir_sync_caller c[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        c[i] = (struct dir_sync_caller){s, i < 6 ? f->dir : missing, 0, 0};
        assert_int_equal(pthread_create(&t[i], NULL, call_dir_sync, &c[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        if (i < 6)
            assert_int_equal(c[i].failures, 0);
        else
            assert_int_equal(c[i].errnos, 40);
    }
    file_dir_syncs_free(s);
    /* Without a shared state, a plain flush. */
    assert_int_equal(file_sync_dir_shared(NULL, f->dir), 0);
    errno = 0;
    assert_int_equal(file_sync_dir_shared(NULL, missing), -1);
    assert_int_equal(errno, ENOENT);
}

static int list_instance(void *ud, const char *sop, const char *path)
{
    (void)path;
    char *out = ud;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%s%s", n ? " " : "", sop);
    return 0;
}

/* A model that takes the study: one job lists the instances of all its
 * series, series by series, and a group claim takes only jobs on the very
 * same series. */
static void test_a_study_job_covers_every_series_it_was_planned_on(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(commit_content(f->st, SERIES2, "1.2.3.3", "c", 1000), STORAGE_OK);
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.2", "b", 1000), STORAGE_OK);
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    const char *dests[] = {"pacs"};
    struct plan p = {0};
    assert_int_equal(plan_add_job(&p, SERIES2, "enc", PLAN_PRIORITY_NORMAL, dests, 1), 0);
    assert_int_equal(plan_add_job(&p, SERIES, "enc", PLAN_PRIORITY_NORMAL, dests, 1), 0);
    assert_int_equal(plan_add_job(&p, SERIES2, "head", PLAN_PRIORITY_NORMAL, dests, 1), 0);
    assert_int_equal(plan_add_job(&p, SERIES, "head", PLAN_PRIORITY_NORMAL, dests, 1), 0);
    assert_int_equal(plan_add_job(&p, SERIES, "head2", PLAN_PRIORITY_NORMAL, dests, 1), 0);
    assert_int_equal(plan_join_study(&p, "enc"), 0);
    assert_int_equal(plan_join_study(&p, "head"), 0);
    assert_int_equal(p.n_jobs, 3);
    int q = -1;
    assert_int_equal(storage_commit_plan(f->st, STUDY, 1000, &p, 0, 5000, &q), STORAGE_OK);
    assert_int_equal(q, 3);
    plan_free(&p);
    struct storage_job j[3];
    assert_int_equal(storage_job_claim_among(f->st, "[\"enc\", \"head\", \"head2\"]", -1,
                                             "w1", 6000, 500, &j[0]),
                     STORAGE_OK);
    assert_string_equal(j[0].model, "enc");
    assert_string_equal(j[0].series_uid, SERIES2);
    char sops[512] = "";
    assert_int_equal(storage_foreach_job_instance(f->st, j[0].id, list_instance, sops),
                     STORAGE_OK);
    assert_string_equal(sops, "1.2.3.3 1.2.3.1 1.2.3.2");
    /* head has the same two series; head2 only one of them */
    assert_int_equal(storage_job_claim_among(f->st, "[\"enc\", \"head\", \"head2\"]",
                                             j[0].id, "w1", 6000, 500, &j[1]),
                     STORAGE_OK);
    assert_string_equal(j[1].model, "head");
    assert_int_equal(storage_job_claim_among(f->st, "[\"enc\", \"head\", \"head2\"]",
                                             j[0].id, "w1", 6000, 500, &j[2]),
                     STORAGE_ENOTFOUND);
    assert_int_equal(storage_job_claim_among(f->st, "[\"head2\"]", -1, "w1", 6000, 500, &j[2]),
                     STORAGE_OK);
    sops[0] = '\0';
    assert_int_equal(storage_foreach_job_instance(f->st, j[2].id, list_instance, sops),
                     STORAGE_OK);
    assert_string_equal(sops, "1.2.3.1 1.2.3.2");
    for (int i = 0; i < 3; i++)
        storage_job_clear(&j[i]);
}

static void test_a_plan_lands_jobs_forwards_and_unmatched_together(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.2", "b", 1000), STORAGE_OK);
    assert_int_equal(commit_content(f->st, SERIES2, "1.2.3.3", "c", 1000), STORAGE_OK);
    const char *dests[] = {"pacs", "archive"};
    struct plan p = {0};
    assert_int_equal(plan_add_job(&p, SERIES, "seg", PLAN_PRIORITY_STAT, dests, 2), 0);
    assert_int_equal(plan_add_forward(&p, SERIES, "viewer"), 0);
    assert_int_equal(plan_add_unmatched(&p, SERIES2), 0);
    int q = -1;
    assert_int_equal(storage_commit_plan(f->st, STUDY, 1000, &p, 0, 5000, &q), STORAGE_OK);
    assert_int_equal(q, 3); /* one job, two forwarded instances */
    plan_free(&p);
    assert_string_equal(tally(f->st).state, "complete");
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 6000, 500, &j), STORAGE_OK);
    assert_string_equal(j.series_uid, SERIES);
    assert_int_equal(j.n_destinations, 2);
    assert_string_equal(j.destinations[0], "pacs");
    assert_string_equal(j.destinations[1], "archive");
    storage_job_clear(&j);
    struct outbox_list all;
    memset(&all, 0, sizeof all);
    assert_int_equal(storage_foreach_outbox(f->st, collect_outbox, &all), STORAGE_OK);
    assert_int_equal(all.n, 2);
    assert_string_equal(all.dest[0], "viewer");
    char unmatched[512] = "";
    assert_int_equal(storage_foreach_unmatched(f->st, list_unmatched, unmatched), STORAGE_OK);
    assert_string_equal(unmatched, STUDY "/" SERIES2 "/CT");

    /* All or nothing: a plan that fails midway (here a job row a trigger
     * refuses, after a forward and a job went in) leaves the study
     * receiving with nothing of it queued. */
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.9", "d", 9000), STORAGE_OK);
    char dbpath[512];
    snprintf(dbpath, sizeof dbpath, "%s/ainode.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TRIGGER refuse_model BEFORE INSERT ON jobs"
                                  " WHEN NEW.model='bad' BEGIN SELECT RAISE(ABORT, 'no'); END",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    memset(&p, 0, sizeof p);
    assert_int_equal(plan_add_forward(&p, SERIES, "viewer"), 0);
    assert_int_equal(plan_add_job(&p, SERIES, "good", PLAN_PRIORITY_NORMAL, dests, 1), 0);
    assert_int_equal(plan_add_job(&p, SERIES, "bad", PLAN_PRIORITY_NORMAL, dests, 1), 0);
    assert_int_equal(storage_commit_plan(f->st, STUDY, 9000, &p, 0, 10000, &q), STORAGE_EIO);
    assert_int_equal(q, 0);
    plan_free(&p);
    assert_string_equal(tally(f->st).state, "receiving");
    assert_int_equal(list_jobs(f->st).n, 1);
    memset(&all, 0, sizeof all);
    assert_int_equal(storage_foreach_outbox(f->st, collect_outbox, &all), STORAGE_OK);
    assert_int_equal(all.n, 2);
}

static void test_a_discarded_study_queues_nothing(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    struct plan p = {0};
    assert_int_equal(plan_add_job(&p, SERIES, "seg", PLAN_PRIORITY_NORMAL, NULL, 0), 0);
    int q = -1;
    assert_int_equal(storage_commit_plan(f->st, STUDY, 1000, &p, 1, 5000, &q), STORAGE_OK);
    assert_int_equal(q, 0);
    plan_free(&p);
    assert_string_equal(tally(f->st).state, "discarded");
    assert_int_equal(list_jobs(f->st).n, 0);
    assert_int_equal(storage_commit_plan(f->st, STUDY, 1000, NULL, 1, 5000, &q),
                     STORAGE_ECONFLICT);
}

/* ---- retention ---------------------------------------------------------- */

#define DAY_MS ((int64_t)86400 * 1000)

/* Commits instance SOP of STUDY_UID (series STUDY_UID.1) received at WHEN. */
static void commit_in_study(struct storage *st, const char *study_uid, const char *sop,
                            int64_t when)
{
    char temp[512], err[256], series[80];
    struct storage_instance inst;
    snprintf(series, sizeof series, "%s.1", study_uid);
    write_temp(st, "x", temp, sizeof temp);
    make_instance(&inst, series, sop, when);
    inst.attr[ATTR_STUDY_INSTANCE_UID] = study_uid;
    inst.attr[ATTR_SERIES_INSTANCE_UID] = series;
    assert_int_equal(storage_commit(st, temp, &inst, err, sizeof err), STORAGE_OK);
}

/* Plans per study: "1.9.2" a job, "1.9.3" and "1.9.4" a forward. */
static void plan_by_study(void *ud, const struct attr_series *s, struct plan *p)
{
    (void)ud;
    const char *study = s->value[ATTR_STUDY_INSTANCE_UID];
    const char *series = s->value[ATTR_SERIES_INSTANCE_UID];
    if (strcmp(study, "1.9.2") == 0 || strcmp(study, "1.9.1") == 0)
        assert_int_equal(plan_add_job(p, series, "seg", PLAN_PRIORITY_NORMAL, NULL, 0), 0);
    if (strcmp(study, "1.9.3") == 0 || strcmp(study, "1.9.4") == 0)
        assert_int_equal(plan_add_forward(p, series, "pacs"), 0);
}

static void complete_all(struct storage *st, int64_t now_ms, planner_fn plan)
{
    int moved, jobs;
    complete_due(st, now_ms, 5, plan, NULL, &moved, &jobs);
}

static int path_exists(const char *fmt, const char *a, const char *b)
{
    char p[512];
    snprintf(p, sizeof p, fmt, a, b);
    return access(p, F_OK) == 0;
}

static void test_retention_deletes_old_finished_studies_with_their_results(void **state)
{
    struct fixture *f = *state;
    char err[256], result[512], seg[512];
    int n = -1;
    /* 1.9.1: received on day 0, its job done with results, one of them sent. */
    commit_in_study(f->st, "1.9.1", "1.9.1.1.1", 1000);
    commit_in_study(f->st, "1.9.1", "1.9.1.1.2", 1000);
    complete_all(f->st, 100000, plan_by_study);
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 100000, 500, &j), STORAGE_OK);
    assert_int_equal(storage_write_result(f->st, j.id, "{}", "gz", 2, result, sizeof result, err,
                                          sizeof err),
                     STORAGE_OK);
    snprintf(seg, sizeof seg, "%s/results/%lld.seg.dcm", f->dir, (long long)j.id);
    FILE *fp = fopen(seg, "w");
    assert_non_null(fp);
    fclose(fp);
    const struct storage_send_item item = {"pacs", "seg", seg, "1.2", "1.3", EXPLICIT_LE};
    assert_int_equal(storage_job_finish(f->st, j.id, "w1", 100100, NULL, result, "{}", &item, 1),
                     STORAGE_OK);
    struct outbox_list due;
    memset(&due, 0, sizeof due);
    assert_int_equal(storage_outbox_due(f->st, 100100, collect_outbox, &due), STORAGE_OK);
    assert_int_equal(due.n, 1);
    assert_int_equal(storage_outbox_record(f->st, due.id[0], 100200, 1, NULL, 0), STORAGE_OK);
    /* 1.9.5: received on day 2. */
    commit_in_study(f->st, "1.9.5", "1.9.5.1.1", 2 * DAY_MS);
    complete_all(f->st, 2 * DAY_MS + 10000, NULL);

    /* Nothing is old enough yet, and 0 days keeps everything. */
    assert_int_equal(storage_retain(f->st, DAY_MS, 1, 0, &n, err, sizeof err), STORAGE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(storage_retain(f->st, 100 * DAY_MS, 0, 0, &n, err, sizeof err),
                     STORAGE_OK);
    assert_int_equal(n, 0);

    assert_int_equal(storage_retain(f->st, 2 * DAY_MS + 20000, 1, 0, &n, err, sizeof err),
                     STORAGE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(studies(f->st), "1.9.5:complete");
    assert_false(path_exists("%s/instances/%s", f->dir, "1.9.1"));
    assert_true(path_exists("%s/instances/%s", f->dir, "1.9.5"));
    assert_int_not_equal(access(result, F_OK), 0);
    assert_int_not_equal(access(seg, F_OK), 0);
    char labels[512];
    snprintf(labels, sizeof labels, "%s/results/%lld.labels.gz", f->dir, (long long)j.id);
    assert_int_not_equal(access(labels, F_OK), 0);
    assert_int_equal(list_jobs(f->st).n, 0);
    struct outbox_list all;
    memset(&all, 0, sizeof all);
    assert_int_equal(storage_foreach_outbox(f->st, collect_outbox, &all), STORAGE_OK);
    assert_int_equal(all.n, 0);
    char path[512];
    assert_int_equal(storage_instance_path(f->st, "1.9.1.1.1", path, sizeof path),
                     STORAGE_ENOTFOUND);

    /* The same study sent again starts afresh. */
    commit_in_study(f->st, "1.9.1", "1.9.1.1.1", 3 * DAY_MS);
    assert_string_equal(studies(f->st), "1.9.5:complete 1.9.1:receiving");
    assert_int_equal(storage_instance_path(f->st, "1.9.1.1.1", path, sizeof path), STORAGE_OK);
    assert_int_equal(access(path, F_OK), 0);
}

static int find_1_9_4(void *ud, const struct storage_outbox_item *it)
{
    if (strcmp(it->study_uid, "1.9.4") == 0)
        *(int64_t *)ud = it->id;
    return 0;
}

static int full_disk(void *ud, const char *data_dir, double *percent)
{
    (void)ud, (void)data_dir;
    *percent = 100;
    return 0;
}

static void test_retention_keeps_unfinished_studies(void **state)
{
    struct fixture *f = *state;
    char err[256];
    int n = -1;
    /* 1.9.2 has a queued job, 1.9.3 a pending send, 1.9.4 a dead-lettered
     * one, 1.9.6 is still receiving. */
    commit_in_study(f->st, "1.9.2", "1.9.2.1.1", 1000);
    commit_in_study(f->st, "1.9.3", "1.9.3.1.1", 1000);
    commit_in_study(f->st, "1.9.4", "1.9.4.1.1", 1000);
    complete_all(f->st, 10000, plan_by_study);
    int64_t id = -1;
    assert_int_equal(storage_outbox_due(f->st, 20000, find_1_9_4, &id), STORAGE_OK);
    assert_int_equal(storage_outbox_record(f->st, id, 20000, 0, "refused", -1), STORAGE_OK);
    commit_in_study(f->st, "1.9.6", "1.9.6.1.1", 30000);
    assert_int_equal(storage_retain_with_usage(f->st, 100 * DAY_MS, 1, 50, full_disk, NULL, &n,
                                               err, sizeof err),
                     STORAGE_OK);
    assert_int_equal(n, 0);
    assert_string_equal(studies(f->st),
                        "1.9.2:complete 1.9.3:complete 1.9.4:complete 1.9.6:receiving");

    /* A running job keeps its study too; once done, the study may go. */
    struct storage_job j;
    assert_int_equal(storage_job_claim(f->st, "seg", "w1", 40000, 500, &j), STORAGE_OK);
    assert_int_equal(storage_retain(f->st, 100 * DAY_MS, 1, 0, &n, err, sizeof err), STORAGE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(storage_job_finish(f->st, j.id, "w1", 40100, NULL, NULL, NULL, NULL, 0),
                     STORAGE_OK);
    assert_int_equal(storage_retain(f->st, 100 * DAY_MS, 1, 0, &n, err, sizeof err), STORAGE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(studies(f->st), "1.9.3:complete 1.9.4:complete 1.9.6:receiving");
}

static void test_retention_keeps_the_study_of_a_quarantined_job(void **state)
{
    struct fixture *f = *state;
    char err[256];
    int n = -1;
    commit_in_study(f->st, "1.9.2", "1.9.2.1.1", 1000);
    complete_all(f->st, 10000, plan_by_study);
    int64_t id = die_inside_stage(f, "inference", 20000);
    assert_int_equal(die_inside_stage(f, "results", 30000), id);
    struct job_list l = list_jobs(f->st);
    assert_string_equal(l.state[job_index(&l, id)], "quarantined");
    assert_string_equal(l.error[job_index(&l, id)], "the node stopped during results 2 times");
    /* It awaits the administrator, who may run it again on its files. */
    assert_int_equal(storage_retain(f->st, 100 * DAY_MS, 1, 0, &n, err, sizeof err), STORAGE_OK);
    assert_int_equal(n, 0);
    assert_string_equal(studies(f->st), "1.9.2:complete");
}

/* Simulated usage: 50 % plus 10 % per study stored. */
static int usage_by_studies(void *ud, const char *data_dir, double *percent)
{
    struct storage *st = ud;
    (void)data_dir;
    struct tally t = tally(st);
    *percent = 50 + 10 * t.studies;
    return 0;
}

static void test_high_water_deletes_oldest_finished_first_until_below(void **state)
{
    struct fixture *f = *state;
    char err[256];
    int n = -1;
    commit_in_study(f->st, "1.9.10", "1.9.10.1.1", 3000);
    commit_in_study(f->st, "1.9.11", "1.9.11.1.1", 1000);
    commit_in_study(f->st, "1.9.12", "1.9.12.1.1", 2000);
    complete_all(f->st, 10000, NULL);
    commit_in_study(f->st, "1.9.13", "1.9.13.1.1", 500); /* older, but receiving */
    /* 90 %: 1.9.11 and then 1.9.12 go, leaving 70 % (not above 70). */
    assert_int_equal(storage_retain_with_usage(f->st, 20000, 0, 70, usage_by_studies, f->st, &n,
                                               err, sizeof err),
                     STORAGE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(studies(f->st), "1.9.13:receiving 1.9.10:complete");
    assert_false(path_exists("%s/instances/%s", f->dir, "1.9.11"));
    assert_false(path_exists("%s/instances/%s", f->dir, "1.9.12"));
    /* Still above 60 %, but nothing else may go. */
    assert_int_equal(storage_retain_with_usage(f->st, 20000, 0, 60, usage_by_studies, f->st, &n,
                                               err, sizeof err),
                     STORAGE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(studies(f->st), "1.9.13:receiving");
    /* The real measurement works on this file system. */
    assert_int_equal(storage_retain(f->st, 20000, 0, 99, &n, err, sizeof err), STORAGE_OK);
}

static void test_interrupted_deletion_is_finished_at_open(void **state)
{
    struct fixture *f = *state;
    char err[256], first[512], second[512];
    storage_close(f->st);
    f->st = NULL;
    /* A process marks a study "deleting", removes one of its files and
     * dies before removing the rest and the rows. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct storage *st;
        sqlite3 *db;
        char dbpath[300];
        if (storage_open(f->dir, NULL, NULL, &st, err, sizeof err) != STORAGE_OK)
            _exit(2);
        commit_in_study(st, "1.9.20", "1.9.20.1.1", 1000);
        commit_in_study(st, "1.9.20", "1.9.20.1.2", 1000);
        commit_in_study(st, "1.9.21", "1.9.21.1.1", 1000);
        complete_all(st, 10000, NULL);
        snprintf(dbpath, sizeof dbpath, "%s/ainode.db", f->dir);
        if (sqlite3_open(dbpath, &db) != SQLITE_OK ||
            sqlite3_exec(db, "UPDATE studies SET state='deleting' WHERE study_uid='1.9.20'",
                         NULL, NULL, NULL) != SQLITE_OK)
            _exit(3);
        sqlite3_close(db);
        struct tally t = tally(st);
        if (t.studies != 2)
            _exit(4);
        if (storage_instance_path(st, "1.9.20.1.1", first, sizeof first) != STORAGE_OK ||
            unlink(first) != 0)
            _exit(5);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
    snprintf(second, sizeof second, "%s/instances/1.9.20/1.9.20.1/1.9.20.1.2.dcm", f->dir);
    assert_int_equal(access(second, F_OK), 0);

    /* Status shows the state as it is. */
    struct storage *ro;
    assert_int_equal(storage_open_readonly(f->dir, &ro, err, sizeof err), STORAGE_OK);
    assert_string_equal(studies(ro), "1.9.20:deleting 1.9.21:complete");
    storage_close(ro);

    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_string_equal(studies(f->st), "1.9.21:complete");
    assert_int_not_equal(access(second, F_OK), 0);
    assert_false(path_exists("%s/instances/%s", f->dir, "1.9.20"));
    assert_int_equal(storage_instance_path(f->st, "1.9.20.1.2", first, sizeof first),
                     STORAGE_ENOTFOUND);
    assert_true(path_exists("%s/instances/%s", f->dir, "1.9.21"));
}

/* Commits instance SOP of STUDY_UID (series STUDY_UID.1) without cmocka
 * assertions (safe off the test's thread); its path goes to PATH. */
static int commit_quiet(struct storage *st, const char *study_uid, const char *sop, int64_t when,
                        char *path, size_t len)
{
    char temp[512], err[256], series[80];
    struct storage_instance inst;
    snprintf(series, sizeof series, "%s.1", study_uid);
    if (storage_temp_path(st, temp, sizeof temp) != STORAGE_OK)
        return -1;
    FILE *fp = fopen(temp, "wb");
    if (!fp)
        return -1;
    fputs("arrived while deleting", fp);
    fclose(fp);
    make_instance(&inst, series, sop, when);
    inst.attr[ATTR_STUDY_INSTANCE_UID] = study_uid;
    inst.attr[ATTR_SERIES_INSTANCE_UID] = series;
    int rc = storage_commit(st, temp, &inst, err, sizeof err);
    if (rc == STORAGE_OK)
        rc = storage_instance_path(st, sop, path, len);
    return rc;
}

struct deleting {
    struct storage *st;
    pthread_mutex_t m;
    pthread_cond_t c;
    pthread_t thread;
    int started, done, done_in_hook, calls;
    char uid[128];
    int rc[3];
    char path[3][512];
};

/* Receives while retention removes files: into another study, a new
 * instance of the study being deleted, and a resend of the instance whose
 * file was removed first. */
static void *receive_meanwhile(void *arg)
{
    struct deleting *d = arg;
    d->rc[0] = commit_quiet(d->st, "1.9.31", "1.9.31.1.1", 50000, d->path[0], 512);
    d->rc[1] = commit_quiet(d->st, "1.9.30", "1.9.30.1.9", 50000, d->path[1], 512);
    d->rc[2] = commit_quiet(d->st, "1.9.30", "1.9.30.1.1", 50000, d->path[2], 512);
    pthread_mutex_lock(&d->m);
    d->done = 1;
    pthread_cond_signal(&d->c);
    pthread_mutex_unlock(&d->m);
    return NULL;
}

/* Called by retention after the first file of the study went: commits on
 * another thread must finish while it waits here. If retention held the
 * store's lock, they could not, and the wait ends unfinished. */
static void hold_retention(void *ud, const char *study_uid)
{
    struct deleting *d = ud;
    d->calls++;
    snprintf(d->uid, sizeof d->uid, "%s", study_uid);
    if (d->started)
        return;
    d->started = pthread_create(&d->thread, NULL, receive_meanwhile, d) == 0;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30; /* a bound on a hang, not a measure of speed */
    pthread_mutex_lock(&d->m);
    while (!d->done && pthread_cond_timedwait(&d->c, &d->m, &until) == 0)
        ;
    d->done_in_hook = d->done;
    pthread_mutex_unlock(&d->m);
}

static void test_receiving_goes_on_while_retention_removes_files(void **state)
{
    struct fixture *f = *state;
    char err[256], first[512], second[512];
    int n = -1;
    commit_in_study(f->st, "1.9.30", "1.9.30.1.1", 1000);
    commit_in_study(f->st, "1.9.30", "1.9.30.1.2", 1000);
    complete_all(f->st, 10000, NULL);
    assert_int_equal(storage_instance_path(f->st, "1.9.30.1.1", first, sizeof first), STORAGE_OK);
    assert_int_equal(storage_instance_path(f->st, "1.9.30.1.2", second, sizeof second),
                     STORAGE_OK);

    struct deleting d;
    memset(&d, 0, sizeof d);
    d.st = f->st;
    pthread_mutex_init(&d.m, NULL);
    pthread_cond_init(&d.c, NULL);
    storage_set_retain_hook(f->st, hold_retention, &d);
    assert_int_equal(storage_retain(f->st, 100 * DAY_MS, 1, 0, &n, err, sizeof err), STORAGE_OK);
    storage_set_retain_hook(f->st, NULL, NULL);
    assert_true(d.started);
    pthread_join(d.thread, NULL);
    pthread_cond_destroy(&d.c);
    pthread_mutex_destroy(&d.m);

    assert_int_equal(n, 1);
    assert_int_equal(d.calls, 1);
    assert_string_equal(d.uid, "1.9.30");
    /* The commits were not serialised behind the removal of files. */
    assert_true(d.done_in_hook);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(d.rc[i], STORAGE_OK);
        assert_int_equal(access(d.path[i], F_OK), 0);
    }
    /* The resend did not take the name of the file just removed. */
    assert_string_not_equal(d.path[2], first);
    /* The old files went; what arrived meanwhile started the study again. */
    assert_int_not_equal(access(first, F_OK), 0);
    assert_int_not_equal(access(second, F_OK), 0);
    assert_string_equal(studies(f->st), "1.9.30:receiving 1.9.31:receiving");
    struct tally t = tally(f->st);
    assert_int_equal(t.instances, 3);
    assert_int_equal(storage_instance_path(f->st, "1.9.30.1.2", second, sizeof second),
                     STORAGE_ENOTFOUND);
}

/* Stands in for the DICOM reader: the UIDs a file's place gives it. */
static int read_from_place(void *ud, const char *path, char **values, char **ts, char **calling)
{
    (void)ud;
    char study[80], series[80], sop[80];
    const char *p = strstr(path, "/instances/");
    if (!p || sscanf(p, "/instances/%79[^/]/%79[^/]/%79[0-9.]", study, series, sop) != 3)
        return -1;
    size_t n = strlen(sop);
    if (n > 4 && !strcmp(sop + n - 4, ".dcm"))
        sop[n - 4] = '\0';
    else if (n && sop[n - 1] == '.')
        sop[n - 1] = '\0';
    for (int i = 0; i < ATTR_COUNT; i++)
        values[i] = NULL;
    values[ATTR_SOP_CLASS_UID] = strdup(CT_CLASS);
    values[ATTR_SOP_INSTANCE_UID] = strdup(sop);
    values[ATTR_STUDY_INSTANCE_UID] = strdup(study);
    values[ATTR_SERIES_INSTANCE_UID] = strdup(series);
    *ts = strdup(EXPLICIT_LE);
    *calling = strdup("MODALITY");
    return 0;
}

static void die_in_retention(void *ud, const char *study_uid)
{
    (void)ud, (void)study_uid;
    _exit(0);
}

static void test_a_stop_while_retention_removes_files_is_finished_at_open(void **state)
{
    struct fixture *f = *state;
    char err[256], first[512], second[512];
    storage_close(f->st);
    f->st = NULL;
    snprintf(first, sizeof first, "%s/instances/1.9.40/1.9.40.1/1.9.40.1.1.dcm", f->dir);
    snprintf(second, sizeof second, "%s/instances/1.9.40/1.9.40.1/1.9.40.1.2.dcm", f->dir);
    /* A node deletes a study and dies after its first file went. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct storage *st;
        int n;
        if (storage_open(f->dir, NULL, NULL, &st, err, sizeof err) != STORAGE_OK)
            _exit(2);
        commit_in_study(st, "1.9.40", "1.9.40.1.1", 1000);
        commit_in_study(st, "1.9.40", "1.9.40.1.2", 1000);
        commit_in_study(st, "1.9.41", "1.9.41.1.1", 1000);
        complete_all(st, 10000, NULL);
        storage_set_retain_hook(st, die_in_retention, NULL);
        storage_retain_with_usage(st, 100 * DAY_MS, 0, 50, full_disk, NULL, &n, err, sizeof err);
        _exit(3);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_not_equal(access(first, F_OK), 0);
    assert_int_equal(access(second, F_OK), 0); /* a complete instance nothing indexes */

    /* The repair would index it again as a study received afresh; the
     * recorded removal goes first. */
    int reindexed, removed;
    assert_int_equal(storage_open(f->dir, read_from_place, NULL, &f->st, err, sizeof err),
                     STORAGE_OK);
    storage_repair_counts(f->st, &reindexed, &removed);
    assert_int_equal(reindexed + removed, 0);
    assert_int_not_equal(access(second, F_OK), 0);
    assert_false(path_exists("%s/instances/%s", f->dir, "1.9.40"));
    assert_string_equal(studies(f->st), "1.9.41:complete");
    assert_true(path_exists("%s/instances/%s", f->dir, "1.9.41"));
}

/* A study held back for refused instances: the hold is in the store, so
 * it is reported with the receiving studies and by the listing after the
 * store is closed and opened again, until it is released. */
struct held_seen {
    int n, held;
    int64_t id;
    char reason[128];
};

static int held_receiving(void *ud, const struct storage_receiving *r)
{
    struct held_seen *h = ud;
    h->n++;
    h->held = r->held;
    h->id = r->id;
    return 0;
}

static int held_listed(void *ud, const struct storage_study *s)
{
    struct held_seen *h = ud;
    h->n++;
    h->id = s->id;
    snprintf(h->reason, sizeof h->reason, "%s", s->held ? s->held : "");
    return 0;
}

static void test_a_held_study_stays_held_across_a_reopen_until_released(void **state)
{
    struct fixture *f = *state;
    int64_t id = 0;
    int newly = -1, was = -1;
    assert_int_equal(storage_study_hold(f->st, STUDY, STORAGE_HOLD_REFUSED, &id, &newly),
                     STORAGE_ENOTFOUND);
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.1", "a", 1000), STORAGE_OK);
    struct held_seen r = {0}, l = {0};
    assert_int_equal(storage_foreach_receiving(f->st, held_receiving, &r), STORAGE_OK);
    assert_int_equal(r.n, 1);
    assert_false(r.held);
    assert_true(r.id > 0);

    assert_int_equal(storage_study_hold(f->st, STUDY, STORAGE_HOLD_REFUSED, &id, &newly),
                     STORAGE_OK);
    assert_int_equal(id, r.id);
    assert_int_equal(newly, 1);
    assert_int_equal(storage_study_hold(f->st, STUDY, STORAGE_HOLD_REFUSED, &id, &newly),
                     STORAGE_OK);
    assert_int_equal(newly, 0);
    /* More instances of it do not end the hold. */
    assert_int_equal(commit_content(f->st, SERIES, "1.2.3.2", "b", 2000), STORAGE_OK);

    storage_close(f->st);
    char err[256];
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    memset(&r, 0, sizeof r);
    assert_int_equal(storage_foreach_receiving(f->st, held_receiving, &r), STORAGE_OK);
    assert_int_equal(r.n, 1);
    assert_true(r.held);
    assert_int_equal(storage_foreach_study(f->st, held_listed, &l), STORAGE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.id, id);
    assert_string_equal(l.reason, STORAGE_HOLD_REFUSED);

    /* Completion may still process it (max_wait_seconds): it keeps the mark. */
    assert_int_equal(storage_commit_plan(f->st, STUDY, 2000, NULL, 0, 3000, NULL), STORAGE_OK);
    memset(&l, 0, sizeof l);
    assert_int_equal(storage_foreach_study(f->st, held_listed, &l), STORAGE_OK);
    assert_string_equal(l.reason, STORAGE_HOLD_REFUSED);

    assert_int_equal(storage_study_release(f->st, STUDY, &id, &was), STORAGE_OK);
    assert_int_equal(was, 1);
    assert_int_equal(storage_study_release(f->st, STUDY, &id, &was), STORAGE_OK);
    assert_int_equal(was, 0);
    memset(&l, 0, sizeof l);
    assert_int_equal(storage_foreach_study(f->st, held_listed, &l), STORAGE_OK);
    assert_string_equal(l.reason, "");
    /* A study not stored (deleted meanwhile) has nothing to release. */
    assert_int_equal(storage_study_release(f->st, "1.2.3.4.5", NULL, &was), STORAGE_OK);
    assert_int_equal(was, 0);
}

/* ---- the audit trail ---- */

/* The audit rows listed, as "calling/outcome/stored/refused" or
 * "kind/destination/outcome/attempts", space-separated. */
static int list_audit_assoc(void *ud, const struct storage_audit_association *a)
{
    char *buf = ud;
    size_t n = strlen(buf);
    snprintf(buf + n, 1024 - n, "%s%s/%s/%s/%d/%d/%s", n ? " " : "", a->calling_ae, a->address,
             a->outcome, a->stored, a->refused, a->tls_peer ? a->tls_peer : "-");
    return 0;
}

static int list_audit_result(void *ud, const struct storage_audit_result *r)
{
    char *buf = ud;
    size_t n = strlen(buf);
    snprintf(buf + n, 1024 - n, "%s%s/%s/%s/%s/%d/%s", n ? " " : "", r->kind, r->destination,
             r->peer ? r->peer : "-", r->outcome, r->attempts, r->error ? r->error : "-");
    return 0;
}

static void audit_assoc(struct storage *st, int64_t started, const char *calling,
                        const char *outcome, int stored, int refused)
{
    struct storage_audit_association a = {
        .started_ms = started, .ended_ms = started + 500, .calling_ae = calling,
        .called_ae = "AINODE", .address = "127.0.0.1", .stored = stored, .refused = refused,
        .outcome = outcome,
    };
    assert_int_equal(storage_audit_association(st, &a), STORAGE_OK);
}

static void audit_result(struct storage *st, int64_t when, const char *kind, const char *outcome,
                         const char *error, int attempts)
{
    struct storage_audit_result r = {
        .time_ms = when, .kind = kind, .destination = "pacs", .peer = "PACS@127.0.0.1:104",
        .sop_instance_uid = "1.2.3.4", .outcome = outcome, .error = error, .attempts = attempts,
    };
    assert_int_equal(storage_audit_result(st, &r), STORAGE_OK);
}

static void test_the_audit_trail_records_and_lists_since_a_time(void **state)
{
    struct fixture *f = *state;
    audit_assoc(f->st, 1000, "CT1", "released", 3, 0);
    audit_assoc(f->st, 3000, "CT2", "aborted by peer", 1, 1);
    audit_assoc(f->st, 2000, "EVIL", "rejected: calling AE not allowed", 0, 0);
    audit_result(f->st, 1500, "seg", "sent", NULL, 1);
    audit_result(f->st, 2500, "forward", "transient", "status 0xa700", 2);
    char buf[1024] = "";
    assert_int_equal(storage_audit_foreach_association(f->st, 0, list_audit_assoc, buf),
                     STORAGE_OK);
    assert_string_equal(buf, "CT1/127.0.0.1/released/3/0/- "
                             "EVIL/127.0.0.1/rejected: calling AE not allowed/0/0/- "
                             "CT2/127.0.0.1/aborted by peer/1/1/-");
    buf[0] = '\0';
    assert_int_equal(storage_audit_foreach_association(f->st, 2000, list_audit_assoc, buf),
                     STORAGE_OK);
    assert_string_equal(buf, "EVIL/127.0.0.1/rejected: calling AE not allowed/0/0/- "
                             "CT2/127.0.0.1/aborted by peer/1/1/-");
    buf[0] = '\0';
    assert_int_equal(storage_audit_foreach_result(f->st, 0, list_audit_result, buf), STORAGE_OK);
    assert_string_equal(buf, "seg/pacs/PACS@127.0.0.1:104/sent/1/- "
                             "forward/pacs/PACS@127.0.0.1:104/transient/2/status 0xa700");
    buf[0] = '\0';
    assert_int_equal(storage_audit_foreach_result(f->st, 2000, list_audit_result, buf),
                     STORAGE_OK);
    assert_string_equal(buf, "forward/pacs/PACS@127.0.0.1:104/transient/2/status 0xa700");

    /* A TLS peer is kept; the rows survive a reopen and a read-only open. */
    struct storage_audit_association tls = {
        .started_ms = 4000, .ended_ms = 4001, .calling_ae = "CT3", .called_ae = "AINODE",
        .address = "::1", .tls_peer = "CN=ct3.example", .stored = 0, .refused = 0,
        .outcome = "released",
    };
    assert_int_equal(storage_audit_association(f->st, &tls), STORAGE_OK);
    storage_close(f->st);
    char err[256];
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    struct storage *ro;
    assert_int_equal(storage_open_readonly(f->dir, &ro, err, sizeof err), STORAGE_OK);
    buf[0] = '\0';
    assert_int_equal(storage_audit_foreach_association(ro, 3500, list_audit_assoc, buf),
                     STORAGE_OK);
    assert_string_equal(buf, "CT3/::1/released/0/0/CN=ct3.example");
    storage_close(ro);
}

static void test_audit_retention_deletes_only_older_rows(void **state)
{
    struct fixture *f = *state;
    audit_assoc(f->st, 1 * DAY_MS, "OLD", "released", 1, 0);
    audit_assoc(f->st, 5 * DAY_MS, "NEW", "released", 2, 0);
    audit_result(f->st, 1 * DAY_MS, "sr", "permanent", "status 0xc000", 1);
    audit_result(f->st, 5 * DAY_MS, "seg", "sent", NULL, 1);
    /* A study and its retention have nothing to do with the audit rows. */
    commit_in_study(f->st, "1.9.7", "1.9.7.1.1", 1000);
    complete_all(f->st, 10000, NULL);
    int n = -1;
    char err[256];
    assert_int_equal(storage_retain(f->st, 100 * DAY_MS, 1, 0, &n, err, sizeof err),
                     STORAGE_OK);
    assert_int_equal(n, 1);
    char buf[1024] = "";
    assert_int_equal(storage_audit_foreach_association(f->st, 0, list_audit_assoc, buf),
                     STORAGE_OK);
    assert_string_equal(buf, "OLD/127.0.0.1/released/1/0/- NEW/127.0.0.1/released/2/0/-");

    n = -1;
    assert_int_equal(storage_audit_retain(f->st, 5 * DAY_MS, &n), STORAGE_OK);
    assert_int_equal(n, 2);
    buf[0] = '\0';
    assert_int_equal(storage_audit_foreach_association(f->st, 0, list_audit_assoc, buf),
                     STORAGE_OK);
    assert_string_equal(buf, "NEW/127.0.0.1/released/2/0/-");
    buf[0] = '\0';
    assert_int_equal(storage_audit_foreach_result(f->st, 0, list_audit_result, buf), STORAGE_OK);
    assert_string_equal(buf, "seg/pacs/PACS@127.0.0.1:104/sent/1/-");
    assert_int_equal(storage_audit_retain(f->st, 5 * DAY_MS, &n), STORAGE_OK);
    assert_int_equal(n, 0);
}

static void test_a_store_of_the_first_release_gets_the_audit_tables(void **state)
{
    struct fixture *f = *state;
    char err[256];
    storage_close(f->st);
    f->st = NULL;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir '%s'", f->dir, f->dir);
    assert_int_equal(system(cmd), 0);
    load_dump(f->dir, "store-v1");
    assert_int_equal(storage_open(f->dir, NULL, NULL, &f->st, err, sizeof err), STORAGE_OK);
    assert_true(user_version(f->dir) >= 6);
    char dbpath[512];
    snprintf(dbpath, sizeof dbpath, "%s/ainode.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    static const char *const tables[] = {"audit_associations", "audit_results"};
    for (int i = 0; i < 2; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tables[i]);
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(s, 0), 0);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    audit_assoc(f->st, 1000, "CT1", "released", 1, 0);
    char buf[1024] = "";
    assert_int_equal(storage_audit_foreach_association(f->st, 0, list_audit_assoc, buf),
                     STORAGE_OK);
    assert_string_equal(buf, "CT1/127.0.0.1/released/1/0/-");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uid_grammar_accepts_valid_uids),
        cmocka_unit_test(test_uid_grammar_rejects_path_tricks_and_bad_syntax),
        cmocka_unit_test_setup_teardown(test_commit_places_file_and_indexes_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_rejects_invalid_uid_and_leaves_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_rejects_missing_uid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_io_failure_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resend_replaces_previous_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_instance_resent_into_another_series_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_instance_resent_under_another_study_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_series_reused_in_another_study_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_study_is_never_moved_to_another_patient, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_patient_id_with_other_demographics_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_instances_without_a_patient_id_are_not_compared,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_identical_resend_stays_idempotent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_resend_of_the_same_bytes_leaves_its_completed_study_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quarantine_keeps_a_refused_instance_aside_unindexed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_what_storage_creates_is_private_whatever_the_umask,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_data_dir_every_user_may_write_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_database_of_an_earlier_release_is_made_private,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_not_applicable_job_is_recorded_with_its_reason_and_never_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_job_records_the_identity_of_the_model_it_runs_with, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_study_completes_and_reopens_on_new_instance,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_empties_temporary_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unclean_stop_reindexes_complete_unindexed_files,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unclean_stop_removes_unreadable_unindexed_files,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_repair_removes_a_file_whose_uids_do_not_match_its_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clean_stop_skips_the_repair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_open_sees_committed_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completion_queues_the_planned_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_attribute_is_indexed_and_in_the_series_rows,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_rows_take_the_first_instance_by_number, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_store_of_the_first_release_is_migrated, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_store_of_a_newer_version_is_refused, setup,
                                        teardown),
        cmocka_unit_test(test_strerror_names_every_code),
        cmocka_unit_test_setup_teardown(test_a_plan_against_a_stale_last_received_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_instance_arriving_while_planning_wins, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_directory_flushes_are_shared_and_their_failures_too,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_study_job_covers_every_series_it_was_planned_on,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_plan_lands_jobs_forwards_and_unmatched_together,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_discarded_study_queues_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_job_is_claimed_once_until_its_lease_expires, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_jobs_left_running_are_queued_again_at_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_job_lost_too_often_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_job_the_node_stopped_inside_runs_again_then_is_quarantined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_job_named_in_the_crash_record_is_quarantined_at_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_stage_left_or_a_job_given_back_is_never_quarantined,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_finished_job_puts_its_results_in_the_outbox,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_job_sends_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_retention_deletes_old_finished_studies_with_their_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_keeps_unfinished_studies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_keeps_the_study_of_a_quarantined_job,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_high_water_deletes_oldest_finished_first_until_below,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_deletion_is_finished_at_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_receiving_goes_on_while_retention_removes_files,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_stop_while_retention_removes_files_is_finished_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_held_study_stays_held_across_a_reopen_until_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_audit_trail_records_and_lists_since_a_time,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_retention_deletes_only_older_rows, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_store_of_the_first_release_gets_the_audit_tables,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
