// seg.cpp — DICOM Segmentation writer (see dicom.h).
//
// One BINARY Segmentation instance per result, built with dcmseg. The
// geometry of every frame is copied from the source frame it was segmented
// on, never recomputed, so the SEG lies exactly on its sources whatever their
// order or spacing.

#include "dicom/dicom.h"
#include "dicom/error.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
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
};

[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fail(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    throw SegError{buf};
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

// Geometry of one source frame, as written in the source (the strings go
// into the SEG unchanged), plus parsed values for comparisons.
struct Geometry {
    std::array<OFString, 3> ipp;
    std::array<OFString, 6> iop;
    OFString spacing;   // PixelSpacing, "row\col"
    OFString thickness; // may be empty
    double ippv[3] = {0, 0, 0};
    double iopv[6] = {0, 0, 0, 0, 0, 0};
    double spacingv[2] = {0, 0};
    double thicknessv = 0;
    bool has_ipp = false, has_iop = false, has_spacing = false;
};

struct Source {
    OFString sop_class, sop_instance, study, series, frame_of_ref, patient_id;
    unsigned rows = 0, cols = 0;
    long frames = 1;
    bool multiframe = false;      // has NumberOfFrames: frames are referenced by number
    std::vector<Geometry> geom;   // per frame (one for classic images)
};

DcmItem *first_item(DcmItem *parent, const DcmTagKey &seq)
{
    DcmItem *it = nullptr;
    if (!parent || parent->findAndGetSequenceItem(seq, it, 0).bad())
        return nullptr;
    return it;
}

// Reads the N components of a DS element; false when absent or short.
template <size_t N>
bool read_ds(DcmItem *it, const DcmTagKey &tag, std::array<OFString, N> &str, double *val)
{
    if (!it)
        return false;
    for (size_t i = 0; i < N; i++) {
        Float64 v;
        if (it->findAndGetOFString(tag, str[i], (unsigned long)i).bad() || str[i].empty() ||
            it->findAndGetFloat64(tag, v, (unsigned long)i).bad())
            return false;
        val[i] = v;
    }
    return true;
}

// Fills what G still lacks from the macro items found in ITEM, which is a
// per-frame item, the shared item or the top-level dataset.
void take_geometry(DcmItem *it, Geometry &g, bool functional_groups)
{
    if (!it)
        return;
    DcmItem *pos = functional_groups ? first_item(it, DCM_PlanePositionSequence) : it;
    DcmItem *ori = functional_groups ? first_item(it, DCM_PlaneOrientationSequence) : it;
    DcmItem *pix = functional_groups ? first_item(it, DCM_PixelMeasuresSequence) : it;
    if (!g.has_ipp)
        g.has_ipp = read_ds<3>(pos, DCM_ImagePositionPatient, g.ipp, g.ippv);
    if (!g.has_iop)
        g.has_iop = read_ds<6>(ori, DCM_ImageOrientationPatient, g.iop, g.iopv);
    if (!g.has_spacing && pix) {
        std::array<OFString, 2> s;
        if (read_ds<2>(pix, DCM_PixelSpacing, s, g.spacingv)) {
            g.spacing = s[0] + "\\" + s[1];
            g.has_spacing = true;
        }
    }
    if (g.thickness.empty() && pix) {
        std::array<OFString, 1> s;
        double v = 0;
        if (read_ds<1>(pix, DCM_SliceThickness, s, &v) && v > 0) {
            g.thickness = s[0];
            g.thicknessv = v;
        }
    }
}

// Reads what the SEG needs from one source file. Values larger than 4 KiB
// (the pixel data) are left in the file.
void read_source(const char *path, size_t k, Source &src, std::unique_ptr<DcmFileFormat> &keep)
{
    auto ff = std::make_unique<DcmFileFormat>();
    OFCondition c = ff->loadFile(path, EXS_Unknown, EGL_noChange, 4096);
    if (c.bad())
        fail("cannot read source of slice %zu: %s", k, c.text());
    DcmDataset *ds = ff->getDataset();
    ds->findAndGetOFString(DCM_SOPClassUID, src.sop_class);
    ds->findAndGetOFString(DCM_SOPInstanceUID, src.sop_instance);
    ds->findAndGetOFString(DCM_StudyInstanceUID, src.study);
    ds->findAndGetOFString(DCM_SeriesInstanceUID, src.series);
    ds->findAndGetOFString(DCM_FrameOfReferenceUID, src.frame_of_ref);
    ds->findAndGetOFString(DCM_PatientID, src.patient_id);
    if (src.sop_class.empty() || src.sop_instance.empty() || src.study.empty() ||
        src.series.empty())
        fail("source of slice %zu lacks SOP, study or series UIDs", k);
    Uint16 rows = 0, cols = 0;
    ds->findAndGetUint16(DCM_Rows, rows);
    ds->findAndGetUint16(DCM_Columns, cols);
    src.rows = rows;
    src.cols = cols;
    Sint32 nf = 0;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, nf).good()) {
        src.multiframe = true;
        src.frames = nf > 0 ? nf : 1;
    }

    DcmItem *shared = first_item(ds, DCM_SharedFunctionalGroupsSequence);
    DcmSequenceOfItems *perframe = nullptr;
    ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, perframe);
    if (src.frames > 1 && !perframe)
        fail("source of slice %zu is multi-frame without per-frame geometry", k);
    // Frames without a per-frame item have no geometry to offer.
    if (perframe && (unsigned long)src.frames > perframe->card())
        src.frames = (long)perframe->card();
    src.geom.assign((size_t)src.frames, Geometry());
    if (perframe) {
        // Walk the items in order: getItem(i) would restart from the head
        // each time.
        size_t f = 0;
        for (DcmObject *o = perframe->nextInContainer(nullptr); o && f < src.geom.size();
             o = perframe->nextInContainer(o), f++)
            take_geometry(static_cast<DcmItem *>(o), src.geom[f], true);
    }
    for (Geometry &g : src.geom) {
        take_geometry(shared, g, true);
        // Classic images, and attributes some writers keep at the top level.
        take_geometry(ds, g, false);
    }
    keep = std::move(ff);
}

bool near_eq(double a, double b, double tol) { return std::fabs(a - b) <= tol; }

bool same_orientation(const Geometry &a, const Geometry &b)
{
    for (int i = 0; i < 6; i++)
        if (!near_eq(a.iopv[i], b.iopv[i], 1e-4))
            return false;
    return true;
}

bool same_measures(const Geometry &a, const Geometry &b)
{
    auto rel = [](double x, double y) {
        return near_eq(x, y, 1e-4 * std::max(std::fabs(x), 1.0));
    };
    return rel(a.spacingv[0], b.spacingv[0]) && rel(a.spacingv[1], b.spacingv[1]) &&
           a.thickness.empty() == b.thickness.empty() && rel(a.thicknessv, b.thicknessv);
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
    if (!r->source_paths)
        fail("no source images");
    for (int k = 0; k < r->nz; k++) {
        if (!r->source_paths[k] || !*r->source_paths[k])
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

// The whole job; throws SegError (or std::exception) on failure.
void write_seg(const dicom_result *r, const char *path, std::string &sop_out,
               std::string &series_out)
{
    validate(r);
    if (!path || !*path)
        fail("no output path");
    const size_t nz = (size_t)r->nz, nx = (size_t)r->nx, ny = (size_t)r->ny;
    const size_t npix = nx * ny;

    // --- sources: each distinct file read once ---
    std::vector<Source> files;
    std::unordered_map<std::string, size_t> file_index;
    std::vector<size_t> slice_file(nz);
    std::vector<long> slice_frame(nz);
    std::unique_ptr<DcmFileFormat> first_ds; // the first source, for Patient/Study import
    for (size_t k = 0; k < nz; k++) {
        auto ins = file_index.emplace(r->source_paths[k], files.size());
        if (ins.second) {
            files.emplace_back();
            std::unique_ptr<DcmFileFormat> keep;
            read_source(r->source_paths[k], k, files.back(), keep);
            if (!first_ds)
                first_ds = std::move(keep);
        }
        slice_file[k] = ins.first->second;
        slice_frame[k] = r->source_frames ? r->source_frames[k] : 0;
    }

    std::set<std::pair<size_t, long>> used;
    std::vector<const Geometry *> geom(nz);
    for (size_t k = 0; k < nz; k++) {
        const Source &s = files[slice_file[k]];
        if (slice_frame[k] >= s.frames)
            fail("slice %zu refers to frame %ld of a source with %ld frames", k,
                 slice_frame[k] + 1, s.frames);
        if (!used.emplace(slice_file[k], slice_frame[k]).second)
            fail("slice %zu refers to a source frame already used by another slice", k);
        if (s.rows != ny || s.cols != nx)
            fail("source of slice %zu has %ux%u pixels, the labels %zux%zu", k, s.cols, s.rows,
                 nx, ny);
        const Geometry &g = s.geom[(size_t)slice_frame[k]];
        if (!g.has_ipp || !g.has_iop || !g.has_spacing)
            fail("source of slice %zu lacks position, orientation or pixel spacing", k);
        if (s.study != files[0].study)
            fail("sources belong to different studies");
        if (s.frame_of_ref != files[0].frame_of_ref)
            fail("sources have different frames of reference");
        geom[k] = &g;
    }
    if (files[0].frame_of_ref.empty())
        fail("sources have no Frame of Reference UID");

    // Position of each slice along the normal of the first slice's plane:
    // its rank is the second dimension index.
    const double *o = geom[0]->iopv;
    const double normal[3] = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5],
                              o[0] * o[4] - o[1] * o[3]};
    std::vector<double> along(nz);
    for (size_t k = 0; k < nz; k++)
        along[k] = geom[k]->ippv[0] * normal[0] + geom[k]->ippv[1] * normal[1] +
                   geom[k]->ippv[2] * normal[2];
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
        if (measures[k].thickness.empty() && !fallback_thickness.empty()) {
            measures[k].thickness = fallback_thickness;
            measures[k].thicknessv = std::atof(fallback_thickness.c_str());
        }
    }
    bool shared_orientation = true, shared_measures = true;
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
    check_cond(seg->importFromSourceImage(*first_ds->getDataset()), "cannot import patient/study");
    first_ds.reset();
    seg->getEquipment().clearData();
    check_cond(seg->setEquipmentInfo(equipment), "invalid equipment");

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
        for (const Source &s : files) {
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
        if (seg->getCommonInstanceReference().addReferences(refs, files[0].study) != files.size())
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
        check_cond(fg.setImageOrientationPatient(g.iop[0], g.iop[1], g.iop[2], g.iop[3], g.iop[4],
                                                 g.iop[5]),
                   "image orientation");
    };
    auto measures_fg = [](FGPixelMeasures &fg, const Geometry &g) {
        check_cond(fg.setPixelSpacing(g.spacing), "pixel spacing");
        if (!g.thickness.empty())
            check_cond(fg.setSliceThickness(g.thickness), "slice thickness");
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
    check_cond(dims.addDimensionIndex(DCM_ImagePositionPatient, dim_uid, DCM_PlanePositionSequence,
                                      "ImagePositionPatient"),
               "dimension index");

    // Which labels occur on which slice, in one pass over the volume.
    std::vector<std::array<bool, 256>> present(nz);
    for (size_t k = 0; k < nz; k++) {
        present[k].fill(false);
        const uint8_t *p = r->labels + k * npix;
        for (size_t i = 0; i < npix; i++)
            present[k][p[i]] = true;
    }

    // Per-slice groups, made once and shared by every segment's frame.
    std::vector<std::unique_ptr<FGPlanePosPatient>> pos_fg(nz);
    std::vector<std::unique_ptr<FGDerivationImage>> deriv_fg(nz);
    auto slice_groups = [&](size_t k) {
        if (pos_fg[k])
            return;
        const Geometry &g = *geom[k];
        pos_fg[k] = std::make_unique<FGPlanePosPatient>();
        check_cond(pos_fg[k]->setImagePositionPatient(g.ipp[0], g.ipp[1], g.ipp[2]),
                   "image position");
        const Source &s = files[slice_file[k]];
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
        if (s.multiframe)
            check_cond(ref.addReferencedFrameNumber((Uint16)(slice_frame[k] + 1)),
                       "source frame number");
        item->getSourceImageItems().push_back(src.release());
        deriv_fg[k] = std::move(d);
    };

    // Frames: by segment, then by slice; one rows*cols buffer at a time.
    std::vector<Uint8> frame(npix);
    for (const dicom_segment *s : segs) {
        const uint8_t value = (uint8_t)s->number;
        std::vector<size_t> slices;
        for (size_t k = 0; k < nz; k++)
            if (present[k][value])
                slices.push_back(k);
        // A segment without voxels keeps one empty frame on slice 0 so that
        // it is still described (every segment needs a frame).
        const bool empty = slices.empty();
        if (empty)
            slices.push_back(0);
        for (size_t k : slices) {
            slice_groups(k);
            const uint8_t *p = r->labels + k * npix;
            if (empty)
                std::fill(frame.begin(), frame.end(), 0);
            else
                for (size_t i = 0; i < npix; i++)
                    frame[i] = p[i] == value;
            FGFrameContent content_fg;
            check_cond(content_fg.setDimensionIndexValues((Uint32)s->number, 0), "dimension value");
            check_cond(content_fg.setDimensionIndexValues(position_index[k], 1), "dimension value");
            OFVector<FGBase *> groups;
            groups.push_back(pos_fg[k].get());
            groups.push_back(&content_fg);
            groups.push_back(deriv_fg[k].get());
            FGPlaneOrientationPatient ori;
            FGPixelMeasures pix;
            if (!shared_orientation) {
                orientation_fg(ori, *geom[k]);
                groups.push_back(&ori);
            }
            if (!shared_measures) {
                measures_fg(pix, measures[k]);
                groups.push_back(&pix);
            }
            check_cond(seg->addFrame(frame.data(), (Uint16)s->number, groups), "cannot add frame");
        }
    }

    // The structure is complete by construction; dcmseg's own structure
    // check compares every frame with every other one (quadratic).
    seg->setCheckFGOnWrite(OFFalse);

    DcmFileFormat ff;
    DcmDataset *ds = ff.getDataset();
    check_cond(seg->writeDataset(*ds), "cannot build SEG");
    seg.reset();

    // Attributes dcmseg 3.6.7 does not manage.
    ds->putAndInsertOFStringArray(DCM_SegmentsOverlap, "NO"); // one label per voxel
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
        fail("cannot write SEG file: %s", c.text());
    }
    sop_out = sop_uid;
    series_out = series_uid;
}

void set_err(char *err, size_t errlen, const char *msg)
{
    ainode_dicom::copy_err(err, errlen, msg);
}

} // namespace

extern "C" int dicom_write_seg(const struct dicom_result *r, const char *path, char *sop_uid,
                               char *series_uid, char *err, size_t errlen)
{
    set_err(err, errlen, "");
    if (sop_uid)
        sop_uid[0] = '\0';
    if (series_uid)
        series_uid[0] = '\0';
    try {
        std::string sop, series;
        write_seg(r, path, sop, series);
        if (sop_uid)
            std::snprintf(sop_uid, 65, "%s", sop.c_str());
        if (series_uid)
            std::snprintf(series_uid, 65, "%s", series.c_str());
        return 0;
    } catch (const SegError &e) {
        set_err(err, errlen, e.msg.c_str());
    } catch (const std::bad_alloc &) {
        set_err(err, errlen, "out of memory writing SEG");
    } catch (const std::exception &e) {
        set_err(err, errlen, e.what());
    } catch (...) {
        set_err(err, errlen, "unexpected error writing SEG");
    }
    return -1;
}
