// sr.cpp — TID 1500 measurement report writer (see results.h): a Comprehensive
// 3D SR built with DCMTK's Content Mapping Resource templates (cmr), one
// Volumetric ROI measurement group (TID 1411) per segment of the SEG.

#include "dicom/internal.h"
#include "dicom/results.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrui.h>
#include <dcmtk/dcmsr/dsrdoc.h>
#include <dcmtk/dcmsr/dsrimgvl.h>
#include <dcmtk/dcmsr/cmr/init.h>
#include <dcmtk/dcmsr/cmr/tid1500.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/ofstd/ofchrenc.h>

#include <unistd.h>

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

void validate(const dicom_result *r, const char *seg_sop_uid, const char *seg_series_uid,
              const char *path)
{
    if (!r)
        fail("no result");
    if (empty(path))
        fail("no output path");
    if (r->findings) {
        validate_findings(r);
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
                           r->series_description, r->software_version};
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
        // (DCMTK's TID 300 has no Algorithm Identification: the device
        // observer of the report names the algorithm.)
        check(g.addQualitativeEvaluation(finding, f.present ? present : absent),
              which + ": presence");
    }
}

void build_report(TID1500_MeasurementReport &report, const dicom_result *r,
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

    if (r->findings) {
        add_findings(report, r);
        if (!report.isValid())
            fail("the measurement report is incomplete");
        return;
    }
    // TID 1411 takes one source series; the label volume comes from one.
    const std::string source_series = sources.front().series;
    const DSRCodedEntryValue ml("ml", "UCUM", "milliliter");
    for (size_t i = 0; i < r->n_segments; i++) {
        const dicom_segment &seg = r->segments[i];
        const std::string which = "segment " + std::to_string(seg.number);
        // The first call fills the group the report starts with.
        check(report.addVolumetricROIMeasurements(), which + ": measurement group");
        CMR_TID1411_in_TID1500 &g = report.getVolumetricROIMeasurements();
        std::string label = empty(seg.label) ? "Segment" : seg.label;
        check(g.setTrackingIdentifier((label + " " + std::to_string(seg.number)).c_str()),
              which + ": tracking identifier");
        check(g.setTrackingUniqueIdentifier(new_uid().c_str()), which + ": tracking UID");
        check(g.setFinding(DSRCodedEntryValue(seg.type.value, seg.type.scheme, seg.type.meaning)),
              which + ": finding");
        DSRImageReferenceValue ref(UID_SegmentationStorage, seg_sop_uid);
        ref.getSegmentList().addItem((Uint16)seg.number);
        check(g.setReferencedSegment(ref), which + ": referenced segment");
        check(g.setSourceSeriesForSegmentation(source_series.c_str()),
              which + ": source series");

        const std::string text = ds_text(seg.volume_ml);
        CMR_TID1411_in_TID1500::MeasurementValue value(text.c_str(), CMR_CID7181(ml));
        // DS keeps at most 16 characters; the exact value goes alongside.
        if (std::strtod(text.c_str(), nullptr) != seg.volume_ml)
            check(value.setFloatingPointRepresentation(seg.volume_ml), which + ": volume");
        check(g.addMeasurement(CMR_CID7469::Volume, value), which + ": volume");
        check(g.getMeasurement().setAlgorithmIdentification(r->algorithm_name,
                                                            r->algorithm_version),
              which + ": algorithm identification");
    }
    if (!report.isValid())
        fail("the measurement report is incomplete");
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
    build_report(report, r, sources, seg_sop_uid);

    DSRDocument doc;
    check(doc.setTreeFromRootTemplate(report), "document tree");
    // The template builds an Enhanced SR; its content fits Comprehensive 3D.
    check(doc.changeDocumentType(DSRTypes::DT_Comprehensive3DSR), "document type");
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
    if (!r->findings)
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
