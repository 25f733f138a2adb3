// sr.cpp — TID 1500 measurement report writer (see results.h): a Comprehensive
// 3D SR built with DCMTK's Content Mapping Resource templates (cmr), one
// Volumetric ROI measurement group (TID 1411) per segment of the SEG, and
// beside it a Planar ROI measurement group (TID 1410) on the segment's
// largest cross-section, added by hand (cmr has no TID 1410): viewers such
// as OHIF show only groups that carry an image region.

#include "dicom/internal.h"
#include "dicom/results.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrui.h>
#include <dcmtk/dcmsr/dsrdoc.h>
#include <dcmtk/dcmsr/dsrimgvl.h>
#include <dcmtk/dcmsr/dsrnumvl.h>
#include <dcmtk/dcmsr/dsrscovl.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/cmr/cid7181.h>
#include <dcmtk/dcmsr/cmr/cid7469.h>
#include <dcmtk/dcmsr/cmr/init.h>
#include <dcmtk/dcmsr/cmr/tid1500.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/ofstd/ofchrenc.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using ainode_dicom::copy_err;
using ainode_dicom::references_frames;

struct sr_error : std::runtime_error {
    int code;
    sr_error(const std::string &m, int c) : std::runtime_error(m), code(c) {}
};

[[noreturn]] void fail(const std::string &msg) { throw sr_error(msg, DICOM_EINVAL); }

void check(const OFCondition &c, const std::string &what)
{
    if (c.bad())
        fail(what + ": " + c.text());
}


bool empty(const char *s) { return !s || !*s; }

bool is_ascii(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

// At most 64 bytes (VR LO), cut on a UTF-8 character boundary.
std::string lo(const char *s)
{
    std::string v = s ? s : "";
    if (v.size() <= 64)
        return v;
    size_t n = 64;
    while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80)
        n--;
    return v.substr(0, n);
}

bool is_sha256(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 64;
}

bool valid_uid(const char *uid)
{
    return !empty(uid) && DcmUniqueIdentifier::checkStringValue(uid, "1").good();
}

std::string new_uid()
{
    char uid[65];
    dicom_new_uid(uid);
    return uid;
}

std::string get_string(DcmItem &ds, const DcmTagKey &tag)
{
    OFString v;
    if (ds.findAndGetOFStringArray(tag, v).bad())
        return std::string();
    return std::string(v.c_str());
}

// A DS value (at most 16 characters) that reads back as V where possible:
// the shortest %g form that fits, since DS has no room for all 17 digits.
std::string ds_text(double v)
{
    char buf[32];
    for (int prec = 15; prec >= 1; prec--) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strlen(buf) <= 16)
            return buf;
    }
    fail("cannot represent " + std::to_string(v) + " as a decimal string");
}

// The source instances a slice refers to, each once, in the order first used.
struct source {
    const ainode_dicom::source_file *file;
    size_t index; // in the job's series
    // How reasons name it: its place in the series, not its path (which
    // names its UIDs; a job's reason is logged).
    std::string name() const { return "instance " + std::to_string(index + 1); }
    std::string sop_class, sop_instance, series, study;
    DcmDataset &ds() const { return *file->header; }
};

std::vector<source> used_sources(const dicom_result *r)
{
    std::vector<source> out;
    const auto &all = r->sources->files;
    std::vector<bool> seen(all.size(), false);
    for (int k = 0; k < r->nz; k++) {
        const int i = r->source_files[k];
        if (i < 0 || (size_t)i >= all.size())
            fail("no source image for slice " + std::to_string(k));
        if (seen[(size_t)i])
            continue;
        seen[(size_t)i] = true;
        const ainode_dicom::source_file &f = all[(size_t)i];
        source s;
        s.file = &f;
        s.index = (size_t)i;
        s.sop_class = f.sop_class.c_str();
        s.sop_instance = f.sop_instance.c_str();
        s.series = f.series.c_str();
        s.study = f.study.c_str();
        if (s.sop_class.empty() || s.sop_instance.empty() || s.series.empty() ||
            s.study.empty())
            fail(s.name() + " lacks SOPClassUID, SOPInstanceUID, SeriesInstanceUID or "
                            "StudyInstanceUID");
        if (!out.empty() && s.study != out.front().study)
            fail(s.name() + " belongs to another study than " + out.front().name());
        out.push_back(std::move(s));
    }
    return out;
}

void validate_findings(const dicom_result *r)
{
    if (r->n_findings == 0)
        fail("no findings to report");
    for (size_t i = 0; i < r->n_findings; i++) {
        const dicom_finding &f = r->findings[i];
        const std::string which = "finding " + std::to_string(i + 1);
        if (empty(f.name))
            fail(which + ": no name");
        if (empty(f.finding.value) || empty(f.finding.scheme) || empty(f.finding.meaning))
            fail(which + ": the finding code is incomplete");
        if (!(f.probability >= 0 && f.probability <= 1))
            fail(which + ": the probability is not within 0..1");
    }
}

// Regressions and detections, like classifications, come without a SEG.
bool has_seg(const dicom_result *r) { return !r->findings && !r->values; }

void validate_values(const dicom_result *r)
{
    if (r->n_values == 0)
        fail("no values to report");
    for (size_t i = 0; i < r->n_values; i++) {
        const dicom_value &v = r->values[i];
        const std::string which = "value " + std::to_string(i + 1);
        if (empty(v.name))
            fail(which + ": no name");
        if (empty(v.concept.value) || empty(v.concept.scheme) || empty(v.concept.meaning))
            fail(which + ": the concept code is incomplete");
        if (empty(v.unit.value) || empty(v.unit.scheme) || empty(v.unit.meaning))
            fail(which + ": the unit code is incomplete");
        if (!std::isfinite(v.value))
            fail(which + ": the value is not a finite number");
    }
}

void validate_boxes(const dicom_result *r)
{
    for (size_t i = 0; i < r->n_boxes; i++) {
        const dicom_box &b = r->boxes[i];
        const std::string which = "box " + std::to_string(i + 1);
        if (empty(b.name))
            fail(which + ": no name");
        if (empty(b.finding.value) || empty(b.finding.scheme) || empty(b.finding.meaning))
            fail(which + ": the finding code is incomplete");
        if (b.slice < 0 || b.slice >= r->nz)
            fail(which + ": no such image");
        if (!(b.x1 >= 0 && b.y1 >= 0 && b.x2 > b.x1 && b.y2 > b.y1))
            fail(which + ": not a box within the image");
        if (!(b.score >= 0 && b.score <= 1))
            fail(which + ": the score is not within 0..1");
    }
}

void validate(const dicom_result *r, const char *seg_sop_uid, const char *seg_series_uid,
              const char *path)
{
    if (!r)
        fail("no result");
    if (empty(path))
        fail("no output path");
    if (r->findings && r->values)
        fail("findings and values in one report");
    if (r->boxes && !r->findings)
        fail("boxes without the findings of their classes");
    if (!has_seg(r) && r->n_segments)
        fail("segments in a report without a SEG");
    if (r->findings) {
        validate_findings(r);
        validate_boxes(r);
    } else if (r->values) {
        validate_values(r);
    } else {
        if (!valid_uid(seg_sop_uid) || !valid_uid(seg_series_uid))
            fail("the SEG's SOP Instance UID and Series Instance UID must be valid UIDs");
        if (!r->segments || r->n_segments == 0)
            fail("no segments to report");
    }
    if (!r->sources || !r->source_files || r->nz < 1)
        fail("no source images");
    if (empty(r->algorithm_name) || empty(r->algorithm_version))
        fail("the algorithm name and version are required");
    if (empty(r->manufacturer))
        fail("the manufacturer is required");
    if (has_seg(r) && (!r->labels || r->nx < 1 || r->ny < 1))
        fail("no label volume");
    // A digest that is not one would be recorded as if it traced the model.
    const struct {
        const char *value, *name;
    } digests[] = {{r->model_sha256, "model"}, {r->manifest_sha256, "manifest"}};
    for (const auto &d : digests)
        if (d.value && !is_sha256(d.value))
            fail(std::string("the ") + d.name + " SHA-256 is not 64 lower-case hex digits");
    std::set<int> numbers;
    for (size_t i = 0; i < r->n_segments; i++) {
        const dicom_segment &s = r->segments[i];
        std::string which = "segment " + std::to_string(i + 1);
        if (s.number < 1 || s.number > 65535)
            fail(which + ": segment number " + std::to_string(s.number) + " out of range");
        if (!numbers.insert(s.number).second)
            fail(which + ": segment number " + std::to_string(s.number) + " repeated");
        if (empty(s.type.value) || empty(s.type.scheme) || empty(s.type.meaning))
            fail(which + ": the property type code is incomplete");
        if (!std::isfinite(s.volume_ml) || s.volume_ml < 0)
            fail(which + ": the volume is not a finite non-negative number");
    }
}

// Whether any text we add ourselves (rather than copy from the sources)
// needs more than ASCII; such text is taken to be UTF-8.
bool own_text_ascii(const dicom_result *r)
{
    const char *texts[] = {r->algorithm_name, r->algorithm_version, r->manufacturer,
                           r->series_description, r->software_version, r->intended_use};
    for (const char *t : texts)
        if (!is_ascii(t))
            return false;
    for (size_t i = 0; i < r->n_segments; i++) {
        const dicom_segment &s = r->segments[i];
        if (!is_ascii(s.label) || !is_ascii(s.type.meaning))
            return false;
    }
    for (size_t i = 0; r->findings && i < r->n_findings; i++)
        if (!is_ascii(r->findings[i].name) || !is_ascii(r->findings[i].finding.meaning))
            return false;
    for (size_t i = 0; r->values && i < r->n_values; i++)
        if (!is_ascii(r->values[i].name) || !is_ascii(r->values[i].concept.meaning) ||
            !is_ascii(r->values[i].unit.meaning))
            return false;
    for (size_t i = 0; r->boxes && i < r->n_boxes; i++)
        if (!is_ascii(r->boxes[i].name) || !is_ascii(r->boxes[i].finding.meaning))
            return false;
    return true;
}

// Enhanced General Equipment needs a Device Serial Number; the host name
// identifies this installation.
std::string device_serial()
{
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        return "unknown";
    return lo(host);
}

// One TID 1501 group per finding of a classification: the finding, present
// or absent (a qualitative evaluation), and the model's probability as a
// Certainty of Finding in percent, as CAD reports give it (TID 4015). The
// images evaluated are the Image Library's entries.
void add_findings(TID1500_MeasurementReport &report, const dicom_result *r)
{
    // SNOMED CT qualifier values (DCMTK's code tables lack them).
    const DSRCodedEntryValue present("52101004", "SCT", "Present"),
        absent("2667000", "SCT", "Absent");
    for (size_t i = 0; i < r->n_findings; i++) {
        const dicom_finding &f = r->findings[i];
        const std::string which = "finding " + std::to_string(i + 1);
        check(report.addIndividualMeasurements(), which + ": measurement group");
        CMR_TID1501_in_TID1500 &g = report.getIndividualMeasurements();
        check(g.setTrackingIdentifier(lo(f.name).c_str()), which + ": tracking identifier");
        check(g.setTrackingUniqueIdentifier(new_uid().c_str()), which + ": tracking UID");
        const DSRCodedEntryValue finding(f.finding.value, f.finding.scheme, f.finding.meaning);
        check(g.setFinding(finding), which + ": finding");
        const double percent = f.probability * 100.0;
        const std::string text = ds_text(percent);
        CMR_TID1501_in_TID1500::MeasurementValue value(text.c_str(),
                                                       CMR_CID7181(CMR_CID7181::Percent));
        if (std::strtod(text.c_str(), nullptr) != percent)
            check(value.setFloatingPointRepresentation(percent), which + ": certainty");
        check(g.addMeasurement(CMR_CID7469(DSRCodedEntryValue(CODE_DCM_CertaintyOfFinding)),
                               value),
              which + ": certainty");
        // (DCMTK's TID 300 has no Algorithm Identification:
        // add_finding_algorithms adds it to the finished tree.)
        check(g.addQualitativeEvaluation(finding, f.present ? present : absent),
              which + ": presence");
    }
}

// One TID 1501 group per value of a regression: the value as a numeric
// measurement of its concept, in its UCUM unit. (Its TID 4019 Algorithm
// Identification is added to the finished tree, as for findings.)
void add_values(TID1500_MeasurementReport &report, const dicom_result *r)
{
    for (size_t i = 0; i < r->n_values; i++) {
        const dicom_value &v = r->values[i];
        const std::string which = "value " + std::to_string(i + 1);
        check(report.addIndividualMeasurements(), which + ": measurement group");
        CMR_TID1501_in_TID1500 &g = report.getIndividualMeasurements();
        check(g.setTrackingIdentifier(lo(v.name).c_str()), which + ": tracking identifier");
        check(g.setTrackingUniqueIdentifier(new_uid().c_str()), which + ": tracking UID");
        const std::string text = ds_text(v.value);
        CMR_TID1501_in_TID1500::MeasurementValue value(
            text.c_str(), CMR_CID7181(DSRCodedEntryValue(v.unit.value, v.unit.scheme,
                                                         v.unit.meaning)));
        if (std::strtod(text.c_str(), nullptr) != v.value)
            check(value.setFloatingPointRepresentation(v.value), which + ": value");
        check(g.addMeasurement(CMR_CID7469(DSRCodedEntryValue(v.concept.value, v.concept.scheme,
                                                              v.concept.meaning)),
                               value),
              which + ": measurement");
    }
}


// ---- The planar region of a segment: plain geometry on the label volume ----

// A point in DICOM image coordinates (PS3.3 C.18.6.1.2): column, row, with
// 0,0 the top-left corner of the top-left pixel, so that pixel (c, r)
// spans c..c+1 and r..r+1 and its centre is c+0.5, r+0.5. The outline runs
// along pixel edges, so its corners are whole numbers.
struct outline_point {
    int column, row;
};

struct cross_section {
    int slice = -1;      // k; -1 when the label has no voxel at all
    int64_t pixels = 0;  // voxels of the label on that slice, every piece
    // The outer boundary of the largest 8-connected piece of the label on
    // that slice (ties: the piece met first in row-major order), one
    // point per change of direction, closed: the last point repeats the
    // first. Holes inside the piece are not outlined.
    std::vector<outline_point> outline;
};

// The largest 8-connected piece of MASK (nx x ny): 1 marks its pixels in
// the returned mask; *FIRST gets its first pixel in row-major order.
std::vector<uint8_t> largest_piece(const std::vector<uint8_t> &mask, int nx, int ny, size_t *first)
{
    std::vector<int> piece(mask.size(), -1);
    std::vector<size_t> stack;
    int best = -1, count = 0;
    size_t best_size = 0;
    for (size_t start = 0; start < mask.size(); start++) {
        if (!mask[start] || piece[start] >= 0)
            continue;
        const int id = count++;
        size_t size = 0;
        piece[start] = id;
        stack.push_back(start);
        while (!stack.empty()) {
            const size_t i = stack.back();
            stack.pop_back();
            size++;
            const int x = (int)(i % (size_t)nx), y = (int)(i / (size_t)nx);
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    const int u = x + dx, v = y + dy;
                    if (u < 0 || v < 0 || u >= nx || v >= ny)
                        continue;
                    const size_t j = (size_t)v * (size_t)nx + (size_t)u;
                    if (mask[j] && piece[j] < 0) {
                        piece[j] = id;
                        stack.push_back(j);
                    }
                }
        }
        // Strictly larger: on a tie the piece met first stays.
        if (size > best_size) {
            best_size = size;
            best = id;
            *first = start;
        }
    }
    std::vector<uint8_t> out(mask.size(), 0);
    for (size_t i = 0; i < mask.size(); i++)
        out[i] = piece[i] == best;
    return out;
}

// The outer boundary of the 8-connected piece MASK whose first pixel in
// row-major order is FIRST, traced along pixel edges with the piece on
// the right (image coordinates, rows grow downwards). The top edge of that
// pixel is on the outer boundary: nothing of the piece lies above it or
// before it on its row. At each corner the walk turns left if the pixel
// ahead on the left is in the piece, else goes straight if the one ahead
// on the right is, else turns right; turning left first joins two pixels
// that touch only at a corner, as 8-connectivity wants.
std::vector<outline_point> trace(const std::vector<uint8_t> &mask, int nx, int ny, size_t first)
{
    auto in = [&](int c, int r) {
        return c >= 0 && r >= 0 && c < nx && r < ny && mask[(size_t)r * (size_t)nx + (size_t)c];
    };
    const int x0 = (int)(first % (size_t)nx), y0 = (int)(first / (size_t)nx);
    std::vector<outline_point> out;
    out.push_back({x0, y0});
    int x = x0 + 1, y = y0, dx = 1, dy = 0; // walked the top edge eastwards
    // Each pixel edge is walked at most once.
    const size_t limit = 4 * (size_t)nx * (size_t)ny + 4;
    for (size_t steps = 0; !(x == x0 && y == y0); steps++) {
        if (steps > limit)
            break; // cannot happen for a closed boundary; never loop forever
        // Pixels ahead of corner (x, y): ahead-left and ahead-right.
        int lc, lr, rc, rr;
        if (dx == 1) { lc = x; lr = y - 1; rc = x; rr = y; }                   // east
        else if (dy == 1) { lc = x; lr = y; rc = x - 1; rr = y; }              // south
        else if (dx == -1) { lc = x - 1; lr = y; rc = x - 1; rr = y - 1; }     // west
        else { lc = x - 1; lr = y - 1; rc = x; rr = y - 1; }                   // north
        int ndx, ndy;
        if (in(lc, lr)) { ndx = dy; ndy = -dx; }        // turn left
        else if (in(rc, rr)) { ndx = dx; ndy = dy; }    // straight on
        else { ndx = -dy; ndy = dx; }                   // turn right
        if (ndx != dx || ndy != dy)
            out.push_back({x, y});
        dx = ndx;
        dy = ndy;
        x += dx;
        y += dy;
    }
    out.push_back({x0, y0}); // closed: the first point again
    return out;
}

// The largest cross-section of LABEL: the slice with the most voxels of
// it (ties: the lowest k), with COUNTS from label_counts.
cross_section largest_cross_section(const uint8_t *labels, int nx, int ny, int nz, int label,
                                    const std::vector<int64_t> &counts)
{
    cross_section cs;
    if (label < 0 || label > 255)
        return cs;
    for (int k = 0; k < nz; k++) {
        const int64_t n = counts[(size_t)k * 256 + (size_t)label];
        if (n > cs.pixels) { // strictly more: on a tie the lowest k stays
            cs.pixels = n;
            cs.slice = k;
        }
    }
    if (cs.slice < 0)
        return cs;
    const size_t plane = (size_t)nx * (size_t)ny;
    const uint8_t *p = labels + (size_t)cs.slice * plane;
    std::vector<uint8_t> mask(plane);
    for (size_t i = 0; i < plane; i++)
        mask[i] = p[i] == label;
    size_t first = 0;
    std::vector<uint8_t> piece = largest_piece(mask, nx, ny, &first);
    cs.outline = trace(piece, nx, ny, first);
    return cs;
}

// The largest distance between two points of OUTLINE in mm, with
// COLUMN_SPACING between columns and ROW_SPACING between rows.
double longest_diameter(const std::vector<outline_point> &outline, double column_spacing,
                        double row_spacing)
{
    // The farthest two points of a polygon are corners of its convex hull
    // (Andrew's monotone chain, in mm: scaling the axes keeps convexity).
    struct pt {
        double x, y;
    };
    std::vector<pt> p;
    p.reserve(outline.size());
    for (const outline_point &o : outline)
        p.push_back({o.column * column_spacing, o.row * row_spacing});
    std::sort(p.begin(), p.end(), [](const pt &a, const pt &b) {
        return a.x < b.x || (a.x == b.x && a.y < b.y);
    });
    p.erase(std::unique(p.begin(), p.end(),
                        [](const pt &a, const pt &b) { return a.x == b.x && a.y == b.y; }),
            p.end());
    if (p.size() < 2)
        return 0;
    auto cross = [](const pt &o, const pt &a, const pt &b) {
        return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
    };
    std::vector<pt> hull(2 * p.size());
    size_t h = 0;
    for (size_t i = 0; i < p.size(); i++) {
        while (h >= 2 && cross(hull[h - 2], hull[h - 1], p[i]) <= 0)
            h--;
        hull[h++] = p[i];
    }
    for (size_t i = p.size() - 1, lower = h + 1; i-- > 0;) {
        while (h >= lower && cross(hull[h - 2], hull[h - 1], p[i]) <= 0)
            h--;
        hull[h++] = p[i];
    }
    hull.resize(h - 1);
    double best = 0;
    for (size_t i = 0; i < hull.size(); i++)
        for (size_t j = i + 1; j < hull.size(); j++)
            best = std::max(best, std::hypot(hull[i].x - hull[j].x, hull[i].y - hull[j].y));
    return best;
}

// ---- The report ----

// What ties the two groups of one segment together: the same finding, so
// the same tracking identifier and UID (OHIF merges groups by that UID
// into one measurement, which then has both the outline and the volume).
struct tracking {
    std::string id, uid;
};

// TID 4019 rows 3: what traces a measurement to the exact model, as
// Algorithm Parameters (the one free-text slot of Algorithm
// Identification): "model SHA-256 <hex>", "manifest SHA-256 <hex>".
std::vector<std::string> algorithm_parameters(const dicom_result *r)
{
    std::vector<std::string> out;
    if (r->model_sha256)
        out.push_back(std::string("model SHA-256 ") + r->model_sha256);
    if (r->manifest_sha256)
        out.push_back(std::string("manifest SHA-256 ") + r->manifest_sha256);
    return out;
}

// A measurement value: the shortest DS text, and where DS (16 characters)
// cannot hold V exactly, V itself alongside as the floating point value.
DSRNumericMeasurementValue measured(double v, const DSRCodedEntryValue &unit,
                                    const std::string &what)
{
    const std::string text = ds_text(v);
    DSRNumericMeasurementValue value(text.c_str(), unit);
    if (std::strtod(text.c_str(), nullptr) != v)
        check(value.setFloatingPointRepresentation(v), what);
    return value;
}

std::vector<tracking> build_report(TID1500_MeasurementReport &report, const dicom_result *r,
                                   const std::vector<source> &sources, const char *seg_sop_uid)
{
    check(report.setLanguage(CID5000_Languages::English, CID5001_Countries::UnitedStates),
          "language");
    check(report.getObservationContext().addDeviceObserver(new_uid(), "ainode", r->manufacturer,
                                                           r->algorithm_name),
          "device observer");
    check(report.addProcedureReported(CMR_CID100::ImagingProcedure), "procedure reported");

    // Image library: one group per source series, one entry per instance.
    TID1600_ImageLibrary &lib = report.getImageLibrary();
    if (!lib.hasImageLibrary())
        check(lib.createNewImageLibrary(), "image library");
    std::string group_series;
    for (const source &s : sources) {
        if (s.series != group_series) {
            check(lib.addImageGroup(), "image library group");
            group_series = s.series;
        }
        check(lib.addImageEntry(s.ds(), TID1600_ImageLibrary::withAllDescriptors),
              "image library entry for " + s.name());
    }
    // Descriptors shared by a whole series (modality, study date, ...) once per group.
    check(lib.moveCommonImageDescriptorsToImageGroups(), "image library descriptors");

    if (r->findings)
        add_findings(report, r);
    if (r->values)
        add_values(report, r);
    // TID 1411 takes one source series; the label volume comes from one.
    const std::string source_series = sources.front().series;
    // UCUM "ml" is in no context group of the editions DCMTK 3.6.7 and
    // pydicom 2.3 carry (CID 7181 and its CID 7462 list cm3, mm3, ... for
    // volumes; the group is extensible, so ml may be used): its meaning is
    // UCUM's name for the unit, "milliliter". DCMTK's CODE_UCUM_ml carries
    // the print symbol "ml" instead, hence the text here.
    const DSRCodedEntryValue ml("ml", "UCUM", "milliliter");
    const std::vector<std::string> parameters = algorithm_parameters(r);
    std::vector<tracking> out;
    // Segments of 2-D images have no volume: add_image_planar_groups gives
    // those with pixels a planar group; the others are reported absent here
    // (TID 1500 row 12: the segment's finding, SNOMED CT "Absent").
    for (size_t i = 0; r->images && i < r->n_segments; i++) {
        const dicom_segment &seg = r->segments[i];
        if (seg.voxels == 0)
            check(report.addQualitativeEvaluation(
                      DSRCodedEntryValue(seg.type.value, seg.type.scheme, seg.type.meaning),
                      DSRCodedEntryValue("2667000", "SCT", "Absent")),
                  "segment " + std::to_string(seg.number) + ": absent");
    }
    for (size_t i = 0; !r->images && i < r->n_segments; i++) {
        const dicom_segment &seg = r->segments[i];
        const std::string which = "segment " + std::to_string(seg.number);
        // The first call fills the group the report starts with.
        check(report.addVolumetricROIMeasurements(), which + ": measurement group");
        CMR_TID1411_in_TID1500 &g = report.getVolumetricROIMeasurements();
        std::string label = empty(seg.label) ? "Segment" : seg.label;
        tracking t{label + " " + std::to_string(seg.number), new_uid()};
        check(g.setTrackingIdentifier(t.id.c_str()), which + ": tracking identifier");
        check(g.setTrackingUniqueIdentifier(t.uid.c_str()), which + ": tracking UID");
        check(g.setFinding(DSRCodedEntryValue(seg.type.value, seg.type.scheme, seg.type.meaning)),
              which + ": finding");
        DSRImageReferenceValue ref(UID_SegmentationStorage, seg_sop_uid);
        ref.getSegmentList().addItem((Uint16)seg.number);
        check(g.setReferencedSegment(ref), which + ": referenced segment");
        check(g.setSourceSeriesForSegmentation(source_series.c_str()),
              which + ": source series");

        CMR_TID1411_in_TID1500::MeasurementValue value(
            measured(seg.volume_ml, CMR_CID7181(ml), which + ": volume"));
        check(g.addMeasurement(CMR_CID7469::Volume, value), which + ": volume");
        check(g.getMeasurement().setAlgorithmIdentification(r->algorithm_name,
                                                            r->algorithm_version),
              which + ": algorithm identification");
        for (const std::string &p : parameters)
            check(g.getMeasurement().getAlgorithmIdentification().addParameter(p.c_str()),
                  which + ": algorithm parameter");
        out.push_back(std::move(t));
    }
    // The intended use goes in TID 1500 row 14, the template's one place
    // for free text about the report as a whole, under the standard's
    // generic concept for a remark, (121106, DCM, "Comment"): neither DCM
    // nor SCT has a concept for a device's intended use. The text says
    // what it is, for the reader.
    if (!empty(r->intended_use))
        check(report.addQualitativeEvaluation(CODE_DCM_Comment,
                                              std::string("Intended use: ") + r->intended_use),
              "intended use");
    if (!report.isValid())
        fail("the measurement report is incomplete");
    return out;
}

// Adds TEXT item CONCEPT = TEXT below the current item and returns to it.
void add_text(DSRDocumentTree &tree, DSRTypes::E_RelationshipType rel,
              const DSRCodedEntryValue &concept, const std::string &text, const std::string &what)
{
    check(tree.addChildContentItem(rel, DSRTypes::VT_Text, concept), what);
    check(tree.getCurrentContentItem().setStringValue(text.c_str()), what);
    tree.goUp();
}

// Adds, after the current item, NUM CONCEPT = VALUE with its TID 4019
// Algorithm Identification, as TID 1419 has it; the cursor stays on the NUM.
void add_measurement(DSRDocumentTree &tree, const dicom_result *r,
                     const DSRCodedEntryValue &concept, const DSRNumericMeasurementValue &value,
                     const std::string &what)
{
    check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Num, concept), what);
    check(tree.getCurrentContentItem().setNumericValue(value), what);
    add_text(tree, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmName, r->algorithm_name, what);
    add_text(tree, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmVersion, r->algorithm_version,
             what);
    for (const std::string &p : algorithm_parameters(r))
        add_text(tree, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmParameters, p, what);
}

// The TID 4019 Algorithm Identification of each finding's certainty (TID
// 300 row 9), which DCMTK's TID 300 cannot add: the model's name, version
// and digests on every value it produced, as on a segment's volume.
// A regression's values get theirs the same way.
void add_finding_algorithms(DSRDocumentTree &tree, const dicom_result *r)
{
    const DSRCodedEntryValue certainty(CODE_DCM_CertaintyOfFinding);
    const size_t expected = r->values ? r->n_values : r->n_findings;
    const char *noun = r->values ? "value " : "finding ";
    if (!tree.gotoNamedNode(CODE_DCM_ImagingMeasurements) || !tree.goDown())
        fail("the report has no measurement groups");
    size_t n = 0;
    do {
        const size_t group = tree.getNodeID();
        const std::string what = noun + std::to_string(++n) + ": algorithm identification";
        if (n > expected) // (a detection's boxes are added after this)
            fail("the report has more measurement groups than " + std::to_string(expected) +
                 " " + noun + "groups");
        const dicom_value *v = r->values ? &r->values[n - 1] : nullptr;
        const DSRCodedEntryValue measured_concept =
            v ? DSRCodedEntryValue(v->concept.value, v->concept.scheme, v->concept.meaning)
              : certainty;
        if (!tree.gotoNamedChildNode(measured_concept))
            fail(what + ": no measurement");
        add_text(tree, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmName, r->algorithm_name,
                 what);
        add_text(tree, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmVersion,
                 r->algorithm_version, what);
        for (const std::string &p : algorithm_parameters(r))
            add_text(tree, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmParameters, p, what);
        if (!tree.gotoNode(group))
            fail(what + ": its group is gone");
    } while (tree.gotoNext());
    if (n != expected)
        fail("the report has " + std::to_string(n) + " measurement groups for " +
             std::to_string(expected) + " " + noun + "groups");
}

// Adds, after the current item, a Planar ROI measurement group (TID 1410)
// with its tracking identifier, tracking UID and finding (as in the
// volumetric groups DCMTK builds, TID 1410/1411 row 2 on); the cursor ends
// on the finding, where the group's next items go.
void open_planar_group(DSRDocumentTree &tree, const std::string &id, const std::string &uid,
                       const DSRCodedEntryValue &finding, const std::string &which,
                       bool below = false)
{
    // BELOW: as the first child of the current item (an empty container).
    if (below)
        check(tree.addChildContentItem(DSRTypes::RT_contains, DSRTypes::VT_Container,
                                       CODE_DCM_MeasurementGroup),
              which + ": planar measurement group");
    else
        check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Container,
                                  CODE_DCM_MeasurementGroup),
              which + ": planar measurement group");
    DSRContentItem &group = tree.getCurrentContentItem();
    check(group.setContinuityOfContent(DSRTypes::COC_Separate), which + ": continuity");
    check(group.setTemplateIdentification("1410", "DCMR", UID_DICOMContentMappingResource),
          which + ": template");
    check(tree.addChildContentItem(DSRTypes::RT_hasObsContext, DSRTypes::VT_Text,
                                   CODE_DCM_TrackingIdentifier),
          which + ": tracking identifier");
    check(tree.getCurrentContentItem().setStringValue(id.c_str()), which + ": tracking identifier");
    check(tree.addContentItem(DSRTypes::RT_hasObsContext, DSRTypes::VT_UIDRef,
                              CODE_DCM_TrackingUniqueIdentifier),
          which + ": tracking UID");
    check(tree.getCurrentContentItem().setStringValue(uid.c_str()), which + ": tracking UID");
    check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Code, CODE_DCM_Finding),
          which + ": finding");
    check(tree.getCurrentContentItem().setCodeValue(finding), which + ": finding");
}

// Adds, after the current item, the Image Region: REGION on frame FRAME
// (from 0) of F; the cursor ends on the region.
void add_region(DSRDocumentTree &tree, const DSRSpatialCoordinatesValue &region,
                const ainode_dicom::source_file &f, long frame, const std::string &which)
{
    check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_SCoord, CODE_DCM_ImageRegion),
          which + ": image region");
    check(tree.getCurrentContentItem().setSpatialCoordinates(region), which + ": image region");
    DSRImageReferenceValue image(f.sop_class, f.sop_instance);
    if (references_frames(f))
        image.getFrameList().addItem((Sint32)frame + 1);
    if (!tree.addContentItem(DSRTypes::RT_selectedFrom, DSRTypes::VT_Image,
                             DSRTypes::AM_belowCurrent))
        fail(which + ": the region's image");
    check(tree.getCurrentContentItem().setImageReference(image), which + ": the region's image");
    tree.goUp();
}

// FRAME's geometry in F when it has a Pixel Spacing, else null.
const ainode_dicom::frame_geometry *spaced_geometry(const ainode_dicom::source_file &f,
                                                    long frame)
{
    if (frame < 0 || (size_t)frame >= f.geom.size() || !f.geom[(size_t)frame].has_spacing)
        return nullptr;
    return &f.geom[(size_t)frame];
}

// Fails unless F's image has R's columns and rows: WHAT names it.
void check_size(const ainode_dicom::source_file &f, const dicom_result *r, const std::string &what)
{
    Uint16 rows = 0, columns = 0;
    if (f.header->findAndGetUint16(DCM_Rows, rows).bad() ||
        f.header->findAndGetUint16(DCM_Columns, columns).bad() || rows != r->ny ||
        columns != r->nx)
        fail(what + " is not " + std::to_string(r->nx) + " x " + std::to_string(r->ny) +
             " pixels");
}

// The outline of CS (its largest piece) as a closed POLYLINE on FRAME of
// F, then, where GEOM gives the image's pixel spacing: the area of every
// pixel of the label on that image (all its pieces, not only the outlined
// one, holes left out: the outline's own area would count the holes of
// its piece) and the longest distance between two outline points, "Long
// Axis" (the longest in-plane dimension of a region).
void add_outline(DSRDocumentTree &tree, const dicom_result *r, const cross_section &cs,
                 const ainode_dicom::source_file &f, long frame,
                 const ainode_dicom::frame_geometry *geom, const std::string &which)
{
    // The image region: pixel corners in column, row order (see outline_point).
    DSRSpatialCoordinatesValue region(DSRTypes::GT_Polyline);
    for (const outline_point &p : cs.outline)
        region.getGraphicDataList().addItem((Float32)p.column, (Float32)p.row);
    add_region(tree, region, f, frame, which);
    if (!geom)
        return;
    const double row_spacing = geom->spacing[0], column_spacing = geom->spacing[1];
    const double area = (double)cs.pixels * row_spacing * column_spacing;
    add_measurement(tree, r, CMR_CID7469::getCodedEntry(CMR_CID7469::Area),
                    measured(area, CMR_CID7181::getCodedEntry(CMR_CID7181::SquareMillimeter),
                             which + ": area"),
                    which + ": area");
    const double diameter = longest_diameter(cs.outline, column_spacing, row_spacing);
    add_measurement(tree, r, CMR_CID7469::getCodedEntry(CMR_CID7469::LongAxis),
                    measured(diameter, CMR_CID7181::getCodedEntry(CMR_CID7181::Millimeter),
                             which + ": long axis"),
                    which + ": long axis");
}

// Calls FN(i, segment, which, cross_section, source file, frame) for each
// segment I of R that has voxels, with its largest cross-section and the
// source image (file and frame) that cross-section lies on.
template <typename Fn> void for_each_cross_section(const dicom_result *r, Fn fn)
{
    const std::vector<int64_t> counts = ainode_dicom::label_counts(r);
    const auto &files = r->sources->files;
    for (size_t i = 0; i < r->n_segments; i++) {
        const dicom_segment &seg = r->segments[i];
        const cross_section cs =
            largest_cross_section(r->labels, r->nx, r->ny, r->nz, seg.number, counts);
        if (cs.slice < 0)
            continue; // no voxels: nothing to draw
        const ainode_dicom::source_file &f = files[(size_t)r->source_files[cs.slice]];
        const long frame = r->source_frames ? r->source_frames[cs.slice] : 0;
        fn(i, seg, "segment " + std::to_string(seg.number), cs, f, frame);
    }
}

// One Planar ROI measurement group (TID 1410) per segment with voxels,
// right after the segment's volumetric group: the outline of its largest
// cross-section as a closed POLYLINE on the source image of that slice,
// with the area and the longest diameter there. A segment without voxels
// has no cross-section to draw: it keeps only its volumetric group (0 ml).
void add_planar_groups(DSRDocumentTree &tree, const dicom_result *r,
                       const std::vector<tracking> &tracked)
{
    // The volumetric groups, one per segment in order, as the template made them.
    std::vector<size_t> groups;
    if (!tree.gotoNamedNode(CODE_DCM_ImagingMeasurements) || !tree.goDown())
        fail("the report has no measurement groups");
    do
        groups.push_back(tree.getNodeID());
    while (tree.gotoNext());
    if (groups.size() != r->n_segments)
        fail("the report has " + std::to_string(groups.size()) + " measurement groups for " +
             std::to_string(r->n_segments) + " segments");

    for_each_cross_section(r, [&](size_t i, const dicom_segment &seg, const std::string &which,
                                  const cross_section &cs, const ainode_dicom::source_file &f,
                                  long frame) {
        const std::string slice = "slice " + std::to_string(cs.slice);
        const ainode_dicom::frame_geometry *geom = spaced_geometry(f, frame);
        if (!geom)
            fail(which + ": no pixel spacing for " + slice);
        check_size(f, r, which + ": the source image of " + slice);

        if (!tree.gotoNode(groups[i]))
            fail(which + ": its volumetric group is gone");
        open_planar_group(tree, tracked[i].id, tracked[i].uid,
                          DSRCodedEntryValue(seg.type.value, seg.type.scheme, seg.type.meaning),
                          which);
        add_outline(tree, r, cs, f, frame, geom, which);
    });
}

// A segmentation of 2-D images: one Planar ROI measurement group (TID
// 1410) per segment with pixels, the only groups of the report: the
// outline of the segment's largest piece on the image where it has the
// most pixels, as a closed POLYLINE on that image (frame), and where the
// image has a Pixel Spacing the area of all the segment's pixels there in
// mm2 and the long axis in mm. No volume: a projection image has no depth.
// Pixel Spacing only, never Imager Pixel Spacing: the latter is measured
// at the detector, and the patient plane differs from it by a
// magnification the node does not know (PS3.3 10.7, Basic Pixel Spacing
// Calibration Macro); without Pixel Spacing no standard unit fits pixels,
// so there is no area.
void add_image_planar_groups(DSRDocumentTree &tree, const dicom_result *r)
{
    if (!tree.gotoNamedNode(CODE_DCM_ImagingMeasurements))
        fail("the report has no imaging measurements");
    // The first group goes below the container, each next one after it.
    size_t last = 0;
    if (tree.goDown()) {
        while (tree.gotoNext())
            ;
        last = tree.getNodeID();
    }
    // A segment without pixels is reported absent.
    for_each_cross_section(r, [&](size_t, const dicom_segment &seg, const std::string &which,
                                  const cross_section &cs, const ainode_dicom::source_file &f,
                                  long frame) {
        check_size(f, r, which + ": the source image of image " + std::to_string(cs.slice));
        std::string label = empty(seg.label) ? "Segment" : seg.label;
        const DSRCodedEntryValue finding(seg.type.value, seg.type.scheme, seg.type.meaning);
        if (last) {
            if (!tree.gotoNode(last))
                fail(which + ": the group before it is gone");
            open_planar_group(tree, lo((label + " " + std::to_string(seg.number)).c_str()),
                              new_uid(), finding, which);
        } else {
            if (!tree.gotoNamedNode(CODE_DCM_ImagingMeasurements))
                fail(which + ": no imaging measurements");
            open_planar_group(tree, lo((label + " " + std::to_string(seg.number)).c_str()),
                              new_uid(), finding, which, true);
        }
        if (!tree.goUp())
            fail(which + ": its group");
        last = tree.getNodeID();
        tree.goDown();
        while (tree.gotoNext())
            ;
        add_outline(tree, r, cs, f, frame, spaced_geometry(f, frame), which);
    });
}

// One Planar ROI measurement group (TID 1410) per box of a detection,
// after the findings of its classes: the box as a closed POLYLINE of its
// four corners (the first again at the end) on its source image, the
// class's finding, the box's area in mm2 where the image has a pixel
// spacing (without one no standard unit fits pixels, so there is no area),
// and the box's score as a Certainty of Finding in percent, each with the
// model's Algorithm Identification.
void add_box_groups(DSRDocumentTree &tree, const dicom_result *r)
{
    if (!tree.gotoNamedNode(CODE_DCM_ImagingMeasurements) || !tree.goDown())
        fail("the report has no measurement groups");
    while (tree.gotoNext())
        ;
    size_t last = tree.getNodeID();
    const auto &files = r->sources->files;
    for (size_t i = 0; i < r->n_boxes; i++) {
        const dicom_box &b = r->boxes[i];
        const std::string which = "box " + std::to_string(i + 1);
        const ainode_dicom::source_file &f = files[(size_t)r->source_files[b.slice]];
        const long frame = r->source_frames ? r->source_frames[b.slice] : 0;
        if (!tree.gotoNode(last))
            fail(which + ": the group before it is gone");
        open_planar_group(tree, lo(b.name), new_uid(),
                          DSRCodedEntryValue(b.finding.value, b.finding.scheme, b.finding.meaning),
                          which);
        // The group's node: the next box's group goes after it.
        if (!tree.goUp())
            fail(which + ": its group");
        last = tree.getNodeID();
        tree.goDown();
        while (tree.gotoNext())
            ;
        DSRSpatialCoordinatesValue region(DSRTypes::GT_Polyline);
        const double corners[5][2] = {
            {b.x1, b.y1}, {b.x2, b.y1}, {b.x2, b.y2}, {b.x1, b.y2}, {b.x1, b.y1}};
        for (const auto &c : corners)
            region.getGraphicDataList().addItem((Float32)c[0], (Float32)c[1]);
        add_region(tree, region, f, frame, which);

        if (const ainode_dicom::frame_geometry *geom = spaced_geometry(f, frame)) {
            const double area =
                (b.x2 - b.x1) * geom->spacing[1] * (b.y2 - b.y1) * geom->spacing[0];
            add_measurement(
                tree, r, CMR_CID7469::getCodedEntry(CMR_CID7469::Area),
                measured(area, CMR_CID7181::getCodedEntry(CMR_CID7181::SquareMillimeter),
                         which + ": area"),
                which + ": area");
        }
        add_measurement(tree, r, DSRCodedEntryValue(CODE_DCM_CertaintyOfFinding),
                        measured(b.score * 100.0,
                                 CMR_CID7181::getCodedEntry(CMR_CID7181::Percent),
                                 which + ": certainty"),
                        which + ": certainty");
    }
}

void write_sr(const dicom_result *r, const char *seg_sop_uid, const char *seg_series_uid,
              const char *path, dicom_written *written)
{
    validate(r, seg_sop_uid, seg_series_uid, path);

    // The context groups are built lazily on first use: build them once,
    // before any two threads race to do it.
    static std::once_flag cmr_init;
    std::call_once(cmr_init, [] { CMR_ContentMappingResource::initializeAllContextGroups(); });

    std::vector<source> sources = used_sources(r);
    const source &first = sources.front();

    // Patient and study text is copied as stored, with the source's
    // character set; only when our own text needs more than ASCII is it
    // all converted to UTF-8 (in a copy: the set is shared with the SEG).
    DcmDataset *study_ds = &first.ds();
    std::unique_ptr<DcmDataset> converted;
    std::string charset = get_string(*study_ds, DCM_SpecificCharacterSet);
    if (!own_text_ascii(r)) {
        if (!charset.empty() && charset != "ISO_IR 192" && charset != "ISO_IR 6") {
            if (!OFCharacterEncoding::isLibraryAvailable())
                fail("non-ASCII text with source character set " + charset +
                     ", and no character set conversion available");
            converted.reset(new DcmDataset(*study_ds));
            check(converted->convertToUTF8(), "converting " + first.name() + " to UTF-8");
            study_ds = converted.get();
        }
        charset = "ISO_IR 192";
    }

    TID1500_MeasurementReport report(CMR_CID7021::ImagingMeasurementReport);
    const std::vector<tracking> tracked = build_report(report, r, sources, seg_sop_uid);

    DSRDocument doc;
    check(doc.setTreeFromRootTemplate(report), "document tree");
    // The template builds an Enhanced SR; its content fits Comprehensive 3D.
    check(doc.changeDocumentType(DSRTypes::DT_Comprehensive3DSR), "document type");
    if (!has_seg(r))
        add_finding_algorithms(doc.getTree(), r);
    else if (r->images)
        add_image_planar_groups(doc.getTree(), r);
    else
        add_planar_groups(doc.getTree(), r, tracked);
    if (r->boxes)
        add_box_groups(doc.getTree(), r);
    check(doc.readStudyData(*study_ds), "patient and study of " + first.name());
    if (!charset.empty())
        check(doc.setSpecificCharacterSet(charset.c_str()), "specific character set");

    const std::string desc =
        std::string(empty(r->series_description) ? "ainode" : r->series_description) + " report";
    check(doc.setSeriesDescription(lo(desc.c_str()).c_str()), "series description");
    check(doc.setSeriesNumber(std::to_string((long long)r->series_number + 1).c_str()),
          "series number");
    check(doc.setInstanceNumber("1"), "instance number");
    // Enhanced General Equipment (all type 1 in this IOD).
    check(doc.setManufacturer(lo(r->manufacturer).c_str()), "manufacturer");
    check(doc.setManufacturerModelName(lo(r->algorithm_name).c_str()), "manufacturer model name");
    check(doc.setDeviceSerialNumber(device_serial().c_str()), "device serial number");
    check(doc.setSoftwareVersions(lo(empty(r->software_version) ? r->algorithm_version
                                                                : r->software_version)
                                      .c_str()),
          "software versions");
    check(doc.completeDocument(), "completion flag");

    // Every instance the content references: the SEG and all sources.
    DSRSOPInstanceReferenceList &evidence = doc.getCurrentRequestedProcedureEvidence();
    if (has_seg(r))
        check(evidence.addItem(first.study.c_str(), seg_series_uid, UID_SegmentationStorage,
                               seg_sop_uid),
              "evidence: SEG");
    for (const source &s : sources)
        check(evidence.addItem(s.study.c_str(), s.series.c_str(), s.sop_class.c_str(),
                               s.sop_instance.c_str()),
              "evidence: " + s.name());

    DcmFileFormat file;
    DcmDataset &out = *file.getDataset();
    check(doc.write(out), "encoding the SR");
    // DCMTK made its own series and instance UIDs; ours come from dicom_new_uid.
    const std::string series_uid = new_uid(), sop_uid = new_uid();
    check(out.putAndInsertString(DCM_SeriesInstanceUID, series_uid.c_str()), "series UID");
    check(out.putAndInsertString(DCM_SOPInstanceUID, sop_uid.c_str()), "SOP instance UID");
    // The series is as old as its one document (the SEG does the same).
    check(out.putAndInsertString(DCM_SeriesDate, get_string(out, DCM_ContentDate).c_str()),
          "series date");
    check(out.putAndInsertString(DCM_SeriesTime, get_string(out, DCM_ContentTime).c_str()),
          "series time");

    OFCondition c = file.saveFile(path, EXS_LittleEndianExplicit);
    if (c.bad()) {
        unlink(path);
        throw sr_error(std::string("cannot write the SR file: ") + c.text(), DICOM_EIO);
    }
    snprintf(written->sop_class_uid, sizeof written->sop_class_uid, "%s",
             UID_Comprehensive3DSRStorage);
    snprintf(written->sop_instance_uid, sizeof written->sop_instance_uid, "%s", sop_uid.c_str());
    snprintf(written->series_uid, sizeof written->series_uid, "%s", series_uid.c_str());
    snprintf(written->transfer_syntax, sizeof written->transfer_syntax, "%s",
             UID_LittleEndianExplicitTransferSyntax);
}

} // namespace

extern "C" int dicom_write_sr(const struct dicom_result *r, const struct dicom_written *seg,
                              const char *path, struct dicom_written *out, char *err,
                              size_t errlen)
{
    copy_err(err, errlen, "");
    if (!out)
        return copy_err(err, errlen, "no output given", DICOM_EINVAL);
    std::memset(out, 0, sizeof *out);
    int rc;
    try {
        write_sr(r, seg ? seg->sop_instance_uid : nullptr, seg ? seg->series_uid : nullptr, path,
                 out);
        return 0;
    } catch (const sr_error &e) {
        rc = copy_err(err, errlen, e.what(), e.code);
    } catch (const std::bad_alloc &) {
        rc = copy_err(err, errlen, "out of memory", DICOM_ENOMEM);
    } catch (const std::exception &e) {
        rc = copy_err(err, errlen, e.what(), DICOM_EINVAL);
    } catch (...) {
        rc = copy_err(err, errlen, "unexpected error", DICOM_EINVAL);
    }
    std::memset(out, 0, sizeof *out);
    return rc;
}
