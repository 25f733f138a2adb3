/*
 * manpage.c — ainode-manpage, the build's generator of the man page
 * ainode(8) from the tables of cli_help.h, the ones `--help` prints:
 *
 *   ainode-manpage DATE OUT   writes the page to OUT (through OUT.tmp, so
 *                             that a failed run leaves no page behind)
 *   ainode-manpage --escape   copies standard input to standard output as
 *                             roff text lines (what the tests feed it)
 *
 * It links cli_help.c alone: no DCMTK, no libtorch.
 */
#include "service/cli.h"
#include "service/cli_help.h"

#include <stdio.h>
#include <string.h>

/* Writes S as roff text. A line must not start with a control character
 * ('.' or '\''); '-' is a minus (\-), as options need for a reader to copy
 * them; a backslash is \e; quotes, ^ and ~ are their ASCII glyphs; any
 * other byte above ASCII starts a UTF-8 sequence written as \[uXXXX]. In a
 * synopsis (GROUPS non-zero) the spaces inside [...] and (...) do not
 * break. AT_START: OUT is at the start of a line. */
static void roff(FILE *out, const char *s, int groups, int at_start)
{
    int depth = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        if (at_start && (c == '.' || c == '\''))
            fputs("\\&", out);
        at_start = 0;
        if (c >= 0x80) {
            /* UTF-8: the code point, or U+FFFD for a malformed sequence. */
            int n = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : -1;
            unsigned cp = c & (0x3fu >> (n > 0 ? n : 0));
            int ok = n > 0;
            for (int i = 1; ok && i <= n; i++) {
                if ((p[i] & 0xc0) != 0x80)
                    ok = 0;
                else
                    cp = cp << 6 | (p[i] & 0x3fu);
            }
            fprintf(out, "\\[u%04X]", ok ? cp : 0xfffdu);
            p += ok ? n + 1 : 1;
            continue;
        }
        switch (c) {
        case '\\': fputs("\\e", out); break;
        case '-': fputs("\\-", out); break;
        case '\'': fputs("\\(aq", out); break;
        case '`': fputs("\\(ga", out); break;
        case '^': fputs("\\(ha", out); break;
        case '~': fputs("\\(ti", out); break;
        case '\n':
            fputc('\n', out);
            at_start = 1;
            break;
        case '[':
        case '(':
            depth++;
            fputc((int)c, out);
            break;
        case ']':
        case ')':
            depth -= depth > 0;
            fputc((int)c, out);
            break;
        case ' ':
            fputs(groups && depth > 0 ? "\\ " : " ", out);
            break;
        default: fputc((int)c, out);
        }
        p++;
    }
}

/* A line of text in font FONT ('B', 'I' or 'R'). */
static void line(FILE *out, char font, const char *s, int groups)
{
    if (font != 'R')
        fprintf(out, "\\f%c", font);
    roff(out, s, groups, font == 'R');
    fputs(font != 'R' ? "\\fR\n" : "\n", out);
}

/* .TP items: each NAME in FONT, its text below. */
static void items(FILE *out, const struct cli_help_item *list, char font)
{
    for (const struct cli_help_item *i = list; i->name; i++) {
        fputs(".TP\n", out);
        line(out, font, i->name, 0);
        line(out, 'R', i->text, 0);
    }
}

static void synopsis(FILE *out, const char *name, const char *args)
{
    fputs(".SY ainode\n", out);
    if (name)
        line(out, 'B', name, 0);
    line(out, 'R', args, 1);
    fputs(".YS\n", out);
}

static void page(FILE *out, const char *date)
{
    fputs(".\\\" ainode(8), generated from service/cli_help.c by ainode-manpage:\n"
          ".\\\" change the tables there, which `ainode --help` prints too.\n",
          out);
    fputs(".TH AINODE 8 \"", out);
    roff(out, date, 0, 0);
    fputs("\" \"ainode " AINODE_VERSION "\" \"System Administration\"\n", out);
    /* Options and paths stay whole, for a reader to find them: no
     * hyphenation (.YS turns it back on to HY's value). */
    fputs(".nr HY 0\n.nh\n", out);

    fputs(".SH NAME\nainode \\- ", out);
    roff(out, cli_help_tagline, 0, 0);
    fputs("\n.SH SYNOPSIS\n", out);
    fputs(".SY ainode\n\\fICOMMAND\\fR [\\-c\\ \\fICONFIG\\fR] [\\fIoptions\\fR]\n.YS\n", out);
    for (size_t i = 0; i < cli_help_command_count; i++)
        synopsis(out, cli_help_commands[i].name, cli_help_commands[i].synopsis);

    fputs(".SH DESCRIPTION\n", out);
    for (const char *const *d = cli_help_description; *d; d++) {
        if (d != cli_help_description)
            fputs(".PP\n", out);
        line(out, 'R', *d, 0);
    }

    fputs(".SH COMMANDS\n", out);
    for (size_t i = 0; i < cli_help_command_count; i++) {
        const struct cli_help_command *c = &cli_help_commands[i];
        fputs(".SS ", out);
        roff(out, c->name, 0, 0);
        fputc('\n', out);
        synopsis(out, c->name, c->synopsis);
        fputs(".PP\n", out);
        line(out, 'R', c->description, 0);
        items(out, c->options, 'B');
        char exits[1024];
        cli_help_exits(c, exits, sizeof exits);
        fputs(".PP\nExit codes: ", out);
        roff(out, exits, 0, 0);
        fputc('\n', out);
    }

    fputs(".SH FILES\n", out);
    items(out, cli_help_files, 'I');
    fputs(".SH SIGNALS\n", out);
    items(out, cli_help_signals, 'B');
    fputs(".SH ENVIRONMENT\n", out);
    items(out, cli_help_environment, 'B');
    fputs(".SH \"EXIT STATUS\"\n", out);
    for (size_t i = 0; i < cli_help_exit_code_count; i++) {
        const struct cli_help_exit_code *e = &cli_help_exit_codes[i];
        fprintf(out, ".TP\n.B %d\n", e->code);
        roff(out, e->text, 0, 1);
        if (e->detail) {
            fputs(": ", out);
            roff(out, e->detail, 0, 0);
        }
        fputc('\n', out);
    }
    fputs(".SH \"SEE ALSO\"\n", out);
    items(out, cli_help_see_also, 'I');
}

static int escape(void)
{
    char buf[4096];
    int at_start = 1;
    while (fgets(buf, sizeof buf, stdin)) {
        roff(stdout, buf, 0, at_start);
        at_start = strchr(buf, '\n') != NULL;
    }
    if (!at_start)
        fputc('\n', stdout);
    return ferror(stdin) || fflush(stdout) ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--escape"))
        return escape();
    if (argc != 3) {
        fprintf(stderr, "usage: ainode-manpage DATE OUT | --escape\n");
        return 2;
    }
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]) >= sizeof tmp) {
        fprintf(stderr, "ainode-manpage: %s: name too long\n", argv[2]);
        return 1;
    }
    FILE *out = fopen(tmp, "w");
    if (!out) {
        perror(tmp);
        return 1;
    }
    page(out, argv[1]);
    int failed = ferror(out);
    if (fclose(out) != 0 || failed || rename(tmp, argv[2]) != 0) {
        perror(argv[2]);
        remove(tmp);
        return 1;
    }
    return 0;
}
