// seg.cpp — DICOM Segmentation writer (see results.h).
//
// One BINARY Segmentation instance per result, built with dcmseg. The
// geometry of every frame is copied from the source frame it was segmented
// on, never recomputed, so the SEG lies exactly on its sources whatever their
// order or spacing.
//
// Segmentations of 2-D images (CR, DX, SC, US, ...) may have no patient
// geometry. PS3.3 A.51 then needs no Frame of Reference: the FoR module is
// required only without the Derivation Image functional group (present on
// every frame here), and Plane Position, Plane Orientation and Pixel
// Measures only with a FoR. Such a SEG has none of them; each frame lies
// on its source pixel for pixel, by its Derivation Image reference (with
// the frame number for a multi-frame source). dcmseg 3.6.7 allows this
// (DcmSegmentation::check asks for a FoR only without Derivation Image),
// but its FoR module writes the UID as type 1, so that module is made
// optional and left empty.

#include "dicom/internal.h"
#include "dicom/results.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmfg/fgseg.h>
#include <dcmtk/dcmiod/cielabutil.h>
#include <dcmtk/dcmiod/iodmacro.h>
#include <dcmtk/dcmiod/iodreferences.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <new>
#include <numeric>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// Purpose of Reference of the Contributing Equipment item that names the
// algorithm (IHE AI Results). PS3.16 CID 7005 has no "Processing Algorithm"
// concept (IHE's is a placeholder, 99IHE "Newcode1"), so the standard
// concept that covers equipment creating new instances from others is used.
const char *const CONTRIB_PURPOSE_VALUE = "109102";
const char *const CONTRIB_PURPOSE_MEANING = "Processing Equipment";

struct SegError {
    std::string msg;
    int code;
};

[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fail(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    throw SegError{buf, DICOM_EINVAL};
}

void check_cond(const OFCondition &c, const char *what)
{
    if (c.bad())
        fail("%s: %s", what, c.text());
}

// LO/SH values taken from the caller: non-empty, within the VR's length,
// no backslash (value separator) and no control characters.
void check_text(const char *s, size_t maxlen, const char *what)
{
    if (!s || !*s)
        fail("%s is missing", what);
    size_t n = std::strlen(s);
    if (n > maxlen)
        fail("%s is longer than %zu characters", what, maxlen);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c < 0x20 || c == 0x7f)
            fail("%s contains a character not allowed in DICOM text", what);
    }
}

void check_code(const dicom_code &c, const char *what)
{
    std::string w(what);
    check_text(c.value, 16, (w + " code value").c_str());
    check_text(c.scheme, 16, (w + " coding scheme").c_str());
    check_text(c.meaning, 64, (w + " code meaning").c_str());
}

using ainode_dicom::frame_geometry;
using ainode_dicom::source_file;
using Geometry = frame_geometry;

bool near_eq(double a, double b, double tol) { return std::fabs(a - b) <= tol; }

bool same_orientation(const Geometry &a, const Geometry &b)
{
    for (int i = 0; i < 6; i++)
        if (!near_eq(a.iop[i], b.iop[i], 1e-4))
            return false;
    return true;
}

bool same_measures(const Geometry &a, const Geometry &b)
{
    auto rel = [](double x, double y) {
        return near_eq(x, y, 1e-4 * std::max(std::fabs(x), 1.0));
    };
    return rel(a.spacing[0], b.spacing[0]) && rel(a.spacing[1], b.spacing[1]) &&
           a.thickness_text.empty() == b.thickness_text.empty() && rel(a.thickness, b.thickness);
}

std::string now_dt()
{
    std::time_t t = std::time(nullptr);
    struct tm tmv;
    localtime_r(&t, &tmv);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S%z", &tmv);
    return buf;
}

OFString host_name()
{
    char buf[256] = "";
    if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0])
        return "ainode";
    buf[64] = '\0'; // LO
    return buf;
}

void validate(const dicom_result *r)
{
    if (!r)
        fail("no result given");
    if (r->nz <= 0 || r->nx <= 0 || r->ny <= 0)
        fail("empty label volume (%dx%dx%d)", r->nx, r->ny, r->nz);
    if (r->nx > 65535 || r->ny > 65535)
        fail("slices of %dx%d are too large for a SEG", r->nx, r->ny);
    if (!r->labels)
        fail("no label volume");
    if (!r->sources || !r->source_files)
        fail("no source images");
    const size_t n_files = r->sources->files.size();
    for (int k = 0; k < r->nz; k++) {
        if (r->source_files[k] < 0 || (size_t)r->source_files[k] >= n_files)
            fail("no source image for slice %d", k);
        if (r->source_frames && (r->source_frames[k] < 0 || r->source_frames[k] > 65534))
            fail("invalid source frame %d for slice %d", r->source_frames[k], k);
    }
    if (!r->segments || r->n_segments == 0)
        fail("no segments");
    if (r->n_segments > 255)
        fail("%zu segments, at most 255", r->n_segments);
    bool seen[256] = {false};
    for (size_t i = 0; i < r->n_segments; i++) {
        const dicom_segment &s = r->segments[i];
        if (s.number < 1 || s.number > 255)
            fail("segment number %d outside 1..255", s.number);
        if (seen[s.number])
            fail("segment number %d used twice", s.number);
        seen[s.number] = true;
        char what[64];
        std::snprintf(what, sizeof what, "segment %d label", s.number);
        check_text(s.label, 64, what);
        std::snprintf(what, sizeof what, "segment %d category", s.number);
        check_code(s.category, what);
        std::snprintf(what, sizeof what, "segment %d type", s.number);
        check_code(s.type, what);
    }
    // PS3.3 C.8.20.2: Segment Numbers start at 1 and increase by 1; dcmseg
    // also numbers segments by position, so gaps cannot be represented.
    for (size_t n = 1; n <= r->n_segments; n++)
        if (!seen[n])
            fail("segment numbers must be 1..%zu without gaps (%zu is missing)", r->n_segments,
                 n);
    check_text(r->algorithm_name, 64, "algorithm name");
    check_text(r->algorithm_version, 64, "algorithm version");
    check_code(r->algorithm_family, "algorithm family");
    check_text(r->manufacturer, 64, "manufacturer");
    check_text(r->software_version, 64, "software version");
    if (r->series_description && *r->series_description)
        check_text(r->series_description, 64, "series description");
}

// Sets bit AT + i of OUT (the first bit is the lowest of OUT[0]) for each
// of the N labels L[i] equal to VALUE; OUT is zeroed by the caller. Eight
// labels at a time where the bits fall on whole bytes: the bytes of a word
// that equal VALUE become 0, each zero byte sets its top bit (exactly, no
// carries: Mycroft's test) and one multiplication gathers the eight top
// bits into one byte, the first label's lowest.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "pack_bits reads labels as little-endian words");
void pack_bits(const uint8_t *l, size_t n, uint8_t value, Uint8 *out, size_t at)
{
    size_t i = 0;
    for (; i < n && (at + i) % 8; i++)
        if (l[i] == value)
            out[(at + i) / 8] |= (Uint8)(1u << ((at + i) % 8));
    const uint64_t ones = 0x0101010101010101ull, low7 = 0x7f7f7f7f7f7f7f7full;
    const uint64_t spread = ones * value;
    Uint8 *o = out + (at + i) / 8;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, l + i, 8); // little endian: label i in the lowest byte
        const uint64_t x = w ^ spread;
        const uint64_t zero = ~(((x & low7) + low7) | x | low7); // 0x80 where x's byte is 0
        *o++ = (Uint8)(((zero >> 7) * 0x0102040810204080ull) >> 56);
    }
    for (; i < n; i++)
        if (l[i] == value)
            out[(at + i) / 8] |= (Uint8)(1u << ((at + i) % 8));
}

// The whole job; throws SegError (or std::exception) on failure.
void write_seg(const dicom_result *r, const char *path, dicom_written *out)
{
    validate(r);
    if (!path || !*path)
        fail("no output path");
    const size_t nz = (size_t)r->nz, nx = (size_t)r->nx, ny = (size_t)r->ny;
    const size_t npix = nx * ny;

    // --- sources: the set's files used by some slice, in order of first use ---
    const std::vector<source_file> &all = r->sources->files;
    std::vector<const source_file *> files;
    std::vector<size_t> file_slot(all.size(), SIZE_MAX);
    std::vector<size_t> slice_file(nz);
    std::vector<long> slice_frame(nz);
    for (size_t k = 0; k < nz; k++) {
        size_t i = (size_t)r->source_files[k];
        if (file_slot[i] == SIZE_MAX) {
            const source_file &s = all[i];
            if (s.sop_class.empty() || s.sop_instance.empty() || s.study.empty() ||
                s.series.empty())
                fail("source of slice %zu lacks SOP, study or series UIDs", k);
            file_slot[i] = files.size();
            files.push_back(&s);
        }
        slice_file[k] = file_slot[i];
        slice_frame[k] = r->source_frames ? r->source_frames[k] : 0;
    }

    std::set<std::pair<size_t, long>> used;
    std::vector<const Geometry *> geom(nz);
    for (size_t k = 0; k < nz; k++) {
        const source_file &s = *files[slice_file[k]];
        const long frames = (long)s.geom.size();
        if (slice_frame[k] >= frames)
            fail("slice %zu refers to frame %ld of a source with %ld frames", k,
                 slice_frame[k] + 1, frames);
        if (!used.emplace(slice_file[k], slice_frame[k]).second)
            fail("slice %zu refers to a source frame already used by another slice", k);
        if ((size_t)s.image->rows != ny || (size_t)s.image->cols != nx)
            fail("source of slice %zu has %dx%d pixels, the labels %zux%zu", k, s.image->cols,
                 s.image->rows, nx, ny);
        const Geometry &g = s.geom[(size_t)slice_frame[k]];
        if (!g.complete() && !r->images)
            fail("source of slice %zu lacks position, orientation or pixel spacing", k);
        if (s.study != files[0]->study)
            fail("sources belong to different studies");
        if (s.frame_of_ref != files[0]->frame_of_ref && !r->images)
            fail("sources have different frames of reference");
        geom[k] = &g;
    }
    if (files[0]->frame_of_ref.empty() && !r->images)
        fail("sources have no Frame of Reference UID");
    // Images are placed in patient space only when every one of them is,
    // in one frame of reference; else the SEG has no FoR (see the top).
    bool spatial = !files[0]->frame_of_ref.empty();
    for (size_t k = 0; k < nz && spatial; k++)
        spatial = geom[k]->complete() &&
                  files[slice_file[k]]->frame_of_ref == files[0]->frame_of_ref;

    // Position of each slice along the normal of the first slice's plane:
    // its rank is the second dimension index.
    const double *o = geom[0]->iop;
    const double normal[3] = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5],
                              o[0] * o[4] - o[1] * o[3]};
    std::vector<double> along(nz);
    for (size_t k = 0; k < nz; k++)
        along[k] = geom[k]->ipp[0] * normal[0] + geom[k]->ipp[1] * normal[1] +
                   geom[k]->ipp[2] * normal[2];
    std::vector<size_t> order(nz);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return along[a] < along[b]; });
    std::vector<Uint32> position_index(nz);
    for (size_t i = 0; i < nz; i++)
        position_index[order[i]] = (Uint32)(i + 1);

    // Slice thickness: the source's, else the distance between slices.
    OFString fallback_thickness;
    {
        double gap = 0;
        for (size_t i = 1; i < nz; i++) {
            double d = along[order[i]] - along[order[i - 1]];
            if (d > 1e-6 && (gap == 0 || d < gap))
                gap = d;
        }
        if (gap > 0) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.6g", gap);
            fallback_thickness = buf;
        }
    }
    std::vector<Geometry> measures(nz); // only spacing and thickness are used
    for (size_t k = 0; k < nz; k++) {
        measures[k] = *geom[k];
        if (measures[k].thickness_text.empty() && !fallback_thickness.empty()) {
            measures[k].thickness_text = fallback_thickness;
            measures[k].thickness = std::atof(fallback_thickness.c_str());
        }
    }
    bool shared_orientation = spatial, shared_measures = spatial;
    for (size_t k = 1; k < nz; k++) {
        shared_orientation = shared_orientation && same_orientation(*geom[0], *geom[k]);
        shared_measures = shared_measures && same_measures(measures[0], measures[k]);
    }

    // --- the Segmentation object ---
    char sop_uid[65], series_uid[65], dim_uid[65];
    dicom_new_uid(sop_uid);
    dicom_new_uid(series_uid);
    dicom_new_uid(dim_uid);

    std::string description = std::string("Segmentation by ") + r->algorithm_name;
    if (description.size() > 64)
        description.resize(64);
    ContentIdentificationMacro content("1", "AINODE", description.c_str(), "");
    IODGeneralEquipmentModule::EquipmentInfo equipment(r->manufacturer, "ainode", host_name(),
                                                       r->software_version);
    DcmSegmentation *raw = nullptr;
    check_cond(DcmSegmentation::createBinarySegmentation(raw, (Uint16)ny, (Uint16)nx, equipment,
                                                         content),
               "cannot create SEG");
    std::unique_ptr<DcmSegmentation> seg(raw);

    // Patient, Study and Frame of Reference from the first source. Its
    // equipment comes along with the study import and is replaced below.
    check_cond(seg->importFromSourceImage(*files[0]->header), "cannot import patient/study");
    seg->getEquipment().clearData();
    check_cond(seg->setEquipmentInfo(equipment), "invalid equipment");
    if (!spatial) {
        seg->getFrameOfReference().clearData();
        seg->getFrameOfReference().makeOptional();
    }

    const std::string dt = now_dt();
    const OFString date(dt.substr(0, 8).c_str()), time(dt.substr(8, 6).c_str());
    check_cond(seg->getSOPCommon().setSOPInstanceUID(sop_uid), "SOP Instance UID");
    seg->getSOPCommon().setInstanceCreationDate(date);
    seg->getSOPCommon().setInstanceCreationTime(time);
    check_cond(seg->getSeries().setSeriesInstanceUID(series_uid), "Series Instance UID");
    seg->getSeries().setSeriesDate(date);
    seg->getSeries().setSeriesTime(time);
    if (r->series_description && *r->series_description)
        check_cond(seg->getSeries().setSeriesDescription(r->series_description),
                   "series description");
    check_cond(seg->getSegmentationSeriesModule().setSeriesNumber(
                   std::to_string(r->series_number).c_str()),
               "series number");

    // Common Instance Reference: every source instance, once.
    {
        IODReferences refs;
        for (const source_file *sf : files) {
            const source_file &s = *sf;
            auto *ref = new IODReference(IODReference::LEVEL_INSTANCE);
            ref->m_PatientID = s.patient_id;
            ref->m_StudyInstanceUID = s.study;
            ref->m_SeriesInstanceUID = s.series;
            ref->m_SOPClassUID = s.sop_class;
            ref->m_SOPInstanceUID = s.sop_instance;
            if (!refs.add(ref)) {
                delete ref;
                fail("invalid source reference");
            }
        }
        if (seg->getCommonInstanceReference().addReferences(refs, files[0]->study) != files.size())
            fail("cannot reference the source instances");
    }

    // Segments, in number order (dcmseg numbers them 1, 2, ... as added).
    std::vector<const dicom_segment *> segs(r->n_segments);
    for (size_t i = 0; i < r->n_segments; i++)
        segs[(size_t)r->segments[i].number - 1] = &r->segments[i];
    for (const dicom_segment *s : segs) {
        DcmSegment *ds = nullptr;
        check_cond(DcmSegment::create(ds, s->label,
                                      CodeSequenceMacro(s->category.value, s->category.scheme,
                                                        s->category.meaning),
                                      CodeSequenceMacro(s->type.value, s->type.scheme,
                                                        s->type.meaning),
                                      DcmSegTypes::SAT_AUTOMATIC, r->algorithm_name),
                   "invalid segment");
        std::unique_ptr<DcmSegment> owned(ds);
        AlgorithmIdentificationMacro algo;
        check_cond(algo.getAlgorithmFamilyCode().set(r->algorithm_family.value,
                                                     r->algorithm_family.scheme,
                                                     r->algorithm_family.meaning),
                   "algorithm family");
        check_cond(algo.setAlgorithmName(r->algorithm_name), "algorithm name");
        check_cond(algo.setAlgorithmVersion(r->algorithm_version), "algorithm version");
        check_cond(owned->setSegmentationAlgorithmIdentification(algo), "algorithm identification");
        double L, a, b;
        auto unit = [](int v) { return std::min(std::max(v, 0), 255) / 255.0; };
        IODCIELabUtil::rgb2DicomLab(L, a, b, unit(s->color[0]), unit(s->color[1]),
                                    unit(s->color[2]));
        auto u16 = [](double v) {
            return (Uint16)std::lround(std::min(std::max(v, 0.0), 65535.0));
        };
        check_cond(owned->setRecommendedDisplayCIELabValue(u16(L), u16(a), u16(b)), "colour");
        Uint16 number = 0;
        check_cond(seg->addSegment(owned.get(), number), "cannot add segment");
        owned.release(); // the SEG owns it now
        if (number != (Uint16)s->number)
            fail("segment %d was numbered %u", s->number, (unsigned)number);
    }

    // Shared functional groups where all frames agree.
    auto orientation_fg = [](FGPlaneOrientationPatient &fg, const Geometry &g) {
        check_cond(fg.setImageOrientationPatient(g.iop_text[0], g.iop_text[1], g.iop_text[2],
                                                 g.iop_text[3], g.iop_text[4], g.iop_text[5]),
                   "image orientation");
    };
    auto measures_fg = [](FGPixelMeasures &fg, const Geometry &g) {
        check_cond(fg.setPixelSpacing(g.spacing_text), "pixel spacing");
        if (!g.thickness_text.empty())
            check_cond(fg.setSliceThickness(g.thickness_text), "slice thickness");
    };
    if (shared_orientation) {
        FGPlaneOrientationPatient fg;
        orientation_fg(fg, *geom[0]);
        check_cond(seg->addForAllFrames(fg), "plane orientation");
    }
    if (shared_measures) {
        FGPixelMeasures fg;
        measures_fg(fg, measures[0]);
        check_cond(seg->addForAllFrames(fg), "pixel measures");
    }

    IODMultiframeDimensionModule &dims = seg->getDimensions();
    check_cond(dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid,
                                      DCM_SegmentIdentificationSequence, "ReferencedSegmentNumber"),
               "dimension index");
    if (spatial)
        check_cond(dims.addDimensionIndex(DCM_ImagePositionPatient, dim_uid,
                                          DCM_PlanePositionSequence, "ImagePositionPatient"),
                   "dimension index");

    // Which labels occur on which slice.
    const std::vector<int64_t> counts = ainode_dicom::label_counts(r);
    auto present = [&](size_t k, uint8_t v) { return counts[k * LABELS_PER_PLANE + v] > 0; };

    // Per-slice groups, made once and shared by every segment's frame.
    std::vector<std::unique_ptr<FGPlanePosPatient>> pos_fg(nz);
    std::vector<std::unique_ptr<FGDerivationImage>> deriv_fg(nz);
    auto slice_groups = [&](size_t k) {
        if (deriv_fg[k])
            return;
        const Geometry &g = *geom[k];
        if (spatial) {
            pos_fg[k] = std::make_unique<FGPlanePosPatient>();
            check_cond(pos_fg[k]->setImagePositionPatient(g.ipp_text[0], g.ipp_text[1],
                                                          g.ipp_text[2]),
                       "image position");
        }
        const source_file &s = *files[slice_file[k]];
        auto d = std::make_unique<FGDerivationImage>();
        DerivationImageItem *item = nullptr;
        check_cond(d->addDerivationImageItem(CodeSequenceMacro("113076", "DCM", "Segmentation"), "",
                                             item),
                   "derivation image");
        auto src = std::make_unique<SourceImageItem>();
        check_cond(src->getPurposeOfReferenceCode().set(
                       "121322", "DCM", "Source image for image processing operation"),
                   "purpose of reference");
        ImageSOPInstanceReferenceMacro &ref = src->getImageSOPInstanceReference();
        check_cond(ref.setReferencedSOPClassUID(s.sop_class), "source SOP class");
        check_cond(ref.setReferencedSOPInstanceUID(s.sop_instance), "source SOP instance");
        // The frame by number where the source's class has frames (the SR's
        // rule): a single-frame class is referenced whole.
        if (ainode_dicom::references_frames(s))
            check_cond(ref.addReferencedFrameNumber((Uint16)(slice_frame[k] + 1)),
                       "source frame number");
        item->getSourceImageItems().push_back(src.release());
        deriv_fg[k] = std::move(d);
    };

    // Frames: by segment, then by slice. A segment without voxels keeps
    // one empty frame on slice 0 so that it is still described (every
    // segment needs a frame).
    struct Frame {
        uint8_t value;
        size_t slice;
        bool empty;
    };
    std::vector<Frame> frames;
    for (const dicom_segment *s : segs) {
        const uint8_t value = (uint8_t)s->number;
        const size_t before = frames.size();
        for (size_t k = 0; k < nz; k++)
            if (present(k, value))
                frames.push_back({value, k, false});
        if (frames.size() == before)
            frames.push_back({value, 0, true});
    }
    if (frames.size() > 2147483647u)
        fail("%zu frames, too many for one SEG", frames.size());

    // The functional groups of frame F, as dcmseg's addFrame would keep them.
    FGPlaneOrientationPatient ori;
    FGPixelMeasures pix;
    auto frame_groups = [&](const Frame &f, FGFrameContent &content, OFVector<FGBase *> &groups) {
        const size_t k = f.slice;
        slice_groups(k);
        check_cond(content.setDimensionIndexValues((Uint32)f.value, 0), "dimension value");
        if (spatial) {
            check_cond(content.setDimensionIndexValues(position_index[k], 1), "dimension value");
            groups.push_back(pos_fg[k].get());
        }
        groups.push_back(&content);
        groups.push_back(deriv_fg[k].get());
        if (spatial && !shared_orientation) {
            orientation_fg(ori, *geom[k]);
            groups.push_back(&ori);
        }
        if (spatial && !shared_measures) {
            measures_fg(pix, measures[k]);
            groups.push_back(&pix);
        }
    };

    // dcmseg builds and checks the object around the first frame of each
    // segment: every module, the shared groups, the segments. dcmseg 3.6.7
    // packs a frame one bit at a time, keeps a copy of every group per
    // frame and finds each per-frame item by walking the sequence from its
    // start (quadratic): on a CT of 400 slices that is most of the SEG's
    // time. So the per-frame items are then written here, frame after
    // frame, by the same functional group classes, and the frames packed
    // here.
    {
        std::vector<Uint8> first(npix);
        uint8_t last = 0;
        for (const Frame &f : frames) {
            if (f.value == last)
                continue;
            last = f.value;
            std::fill(first.begin(), first.end(), 0);
            if (!f.empty) {
                const uint8_t *p = r->labels + f.slice * npix;
                for (size_t i = 0; i < npix; i++)
                    first[i] = p[i] == f.value;
            }
            FGFrameContent content;
            OFVector<FGBase *> groups;
            frame_groups(f, content, groups);
            check_cond(seg->addFrame(first.data(), (Uint16)f.value, groups), "cannot add frame");
        }
    }

    // The structure is complete by construction; dcmseg's own structure
    // check compares every frame with every other one (quadratic).
    seg->setCheckFGOnWrite(OFFalse);

    DcmFileFormat ff;
    DcmDataset *ds = ff.getDataset();
    check_cond(seg->writeDataset(*ds), "cannot build SEG");
    seg.reset();

    // Per-frame Functional Groups: every frame's item, appended in order
    // (what dcmseg wrote for the first frames is written again).
    DcmSequenceOfItems *per_frame = nullptr;
    check_cond(ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per_frame),
               "per-frame functional groups");
    if (!per_frame || per_frame->card() != segs.size())
        fail("per-frame functional groups: %lu items, %zu expected",
             per_frame ? per_frame->card() : 0UL, segs.size());
    per_frame->clear();
    for (size_t f = 0; f < frames.size(); f++) {
        FGFrameContent content;
        OFVector<FGBase *> groups;
        frame_groups(frames[f], content, groups);
        FGSegmentation segment;
        check_cond(segment.setReferencedSegmentNumber((Uint16)frames[f].value),
                   "referenced segment");
        groups.push_back(&segment);
        auto item = std::make_unique<DcmItem>();
        for (FGBase *g : groups)
            check_cond(g->write(*item), "per-frame functional group");
        check_cond(per_frame->append(item.get()), "per-frame functional group");
        item.release(); // the sequence owns it
    }
    check_cond(ds->putAndInsertOFStringArray(DCM_NumberOfFrames,
                                             std::to_string(frames.size()).c_str()),
               "number of frames");

    // Pixel Data: one bit per pixel, frame after frame with no padding
    // between them, the first pixel in the lowest bit (PS3.5 8.1.1).
    const size_t bits = frames.size() * npix;
    const size_t bytes = (bits + 7) / 8;
    if (bytes > 4294967294UL)
        fail("the SEG's pixel data would exceed 4 GiB");
    auto pixel_data = std::make_unique<DcmPixelData>(DCM_PixelData);
    Uint8 *packed = nullptr;
    check_cond(pixel_data->createUint8Array((Uint32)bytes, packed), "pixel data");
    pixel_data->setVR(EVR_OB); // 1-bit samples: OB, as dcmseg writes them
    std::memset(packed, 0, bytes);
    for (size_t f = 0; f < frames.size(); f++)
        if (!frames[f].empty)
            pack_bits(r->labels + frames[f].slice * npix, npix, frames[f].value, packed,
                      f * npix);
    check_cond(ds->insert(pixel_data.get(), OFTrue), "pixel data");
    pixel_data.release(); // the data set owns it

    // Attributes dcmseg 3.6.7 does not manage.
    ds->putAndInsertOFStringArray(DCM_SegmentsOverlap, "NO"); // one label per voxel
    // Without a plane orientation the General Image module wants Patient
    // Orientation (type 2C): the sources' when they all agree, else empty.
    if (!spatial) {
        OFString orientation, other;
        files[0]->header->findAndGetOFStringArray(DCM_PatientOrientation, orientation);
        for (const source_file *sf : files) {
            other.clear();
            sf->header->findAndGetOFStringArray(DCM_PatientOrientation, other);
            if (other != orientation)
                orientation.clear();
        }
        check_cond(ds->putAndInsertOFStringArray(DCM_PatientOrientation, orientation),
                   "patient orientation");
    }
    // AI provenance (IHE AIR): the algorithm as contributing equipment.
    DcmItem *ce = nullptr;
    check_cond(ds->findOrCreateSequenceItem(DCM_ContributingEquipmentSequence, ce, -2),
               "contributing equipment");
    ce->putAndInsertOFStringArray(DCM_Manufacturer, r->manufacturer);
    ce->putAndInsertOFStringArray(DCM_ManufacturerModelName, r->algorithm_name);
    ce->putAndInsertOFStringArray(DCM_SoftwareVersions, r->algorithm_version);
    ce->putAndInsertOFStringArray(DCM_ContributionDateTime, dt.c_str());
    std::string what = std::string("Segmentation by AI algorithm ") + r->algorithm_name + " " +
                       r->algorithm_version;
    ce->putAndInsertOFStringArray(DCM_ContributionDescription, what.c_str());
    DcmItem *purpose = nullptr;
    check_cond(ce->findOrCreateSequenceItem(DCM_PurposeOfReferenceCodeSequence, purpose, -2),
               "purpose of reference");
    purpose->putAndInsertOFStringArray(DCM_CodeValue, CONTRIB_PURPOSE_VALUE);
    purpose->putAndInsertOFStringArray(DCM_CodingSchemeDesignator, "DCM");
    purpose->putAndInsertOFStringArray(DCM_CodeMeaning, CONTRIB_PURPOSE_MEANING);

    OFCondition c = ff.saveFile(path, EXS_LittleEndianExplicit);
    if (c.bad()) {
        unlink(path);
        throw SegError{std::string("cannot write SEG file: ") + c.text(), DICOM_EIO};
    }
    std::snprintf(out->sop_class_uid, sizeof out->sop_class_uid, "%s", UID_SegmentationStorage);
    std::snprintf(out->sop_instance_uid, sizeof out->sop_instance_uid, "%s", sop_uid);
    std::snprintf(out->series_uid, sizeof out->series_uid, "%s", series_uid);
    std::snprintf(out->transfer_syntax, sizeof out->transfer_syntax, "%s",
                  UID_LittleEndianExplicitTransferSyntax);
}

} // namespace

extern "C" int dicom_write_seg(const struct dicom_result *r, const char *path,
                               struct dicom_written *out, char *err, size_t errlen)
{
    using ainode_dicom::copy_err;
    copy_err(err, errlen, "");
    if (!out)
        return copy_err(err, errlen, "no output given", DICOM_EINVAL);
    std::memset(out, 0, sizeof *out);
    try {
        write_seg(r, path, out);
        return 0;
    } catch (const SegError &e) {
        std::memset(out, 0, sizeof *out);
        return copy_err(err, errlen, e.msg, e.code);
    } catch (const std::bad_alloc &) {
        std::memset(out, 0, sizeof *out);
        return copy_err(err, errlen, "out of memory writing SEG", DICOM_ENOMEM);
    } catch (const std::exception &e) {
        std::memset(out, 0, sizeof *out);
        return copy_err(err, errlen, e.what(), DICOM_EINVAL);
    } catch (...) {
        std::memset(out, 0, sizeof *out);
        return copy_err(err, errlen, "unexpected error writing SEG", DICOM_EINVAL);
    }
}
