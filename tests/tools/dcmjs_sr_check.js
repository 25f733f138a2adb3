#!/usr/bin/env node
// Reads a TID 1500 SR written by ainode the way the OHIF viewer (3.x) does:
// dcmjs parses and naturalizes it, then the measurement groups are found,
// merged by Tracking Unique Identifier and turned into measurements as
// OHIF's cornerstone-dicom-sr extension does (getSopClassHandlerModule:
// _getMeasurements, _processMeasurement, _processTID1410Measurement).
//
//     NODE_PATH=<dir with dcmjs> node dcmjs_sr_check.js SR EXPECTED.json
//
// EXPECTED.json: {"segments": [{"tracking_identifier", "sop_instance",
// "sop_class", "rows", "columns", "area_mm2", "diameter_mm", "volume_ml"}]},
// computed elsewhere (numpy) from the labels and source images. Checks that
// every measurement such a reader would display has a graphic (a SCOORD
// with its image), that each expected segment is one such measurement
// whose closed polyline lies on its referenced image, and that its area,
// long axis and volume agree with EXPECTED. Prints each problem; exits 0
// when there is none, 1 otherwise, 2 on bad usage.
//
// dcmjs's adapters (MeasurementReport.generateToolState) are not used:
// they rebuild Cornerstone tools from Cornerstone's own TID 300 groups
// (a NUM INFERRED FROM a SCOORD), and OHIF calls them only for SRs it
// made itself; a TID 1410 group is displayed through the path above.

"use strict";

const fs = require("fs");

let dcmjs;
try {
    dcmjs = require("dcmjs");
} catch (e) {
    process.stderr.write("dcmjs_sr_check: cannot load dcmjs (set NODE_PATH): " + e.message + "\n");
    process.exit(2);
}

const CODES = {
    ImagingMeasurementReport: "126000",
    ImagingMeasurements: "126010",
    MeasurementGroup: "125007",
    TrackingUniqueIdentifier: "112040",
    TrackingIdentifier: "112039",
    Area: "42798000",
    LongAxis: "103339001",
    Volume: "118565006",
};

const problems = [];
function expect(ok, message) {
    if (!ok) problems.push(message);
    return ok;
}

function asArray(seq) {
    if (!seq) return [];
    return Array.isArray(seq) ? seq : [seq];
}

// The first item of a sequence, as OHIF reads one (seq.CodeValue): dcmjs
// gives single-item sequences accessors that reach into their item.
function first(seq) {
    return asArray(seq)[0];
}

function codeValue(item) {
    return item && item.ConceptNameCodeSequence ? item.ConceptNameCodeSequence.CodeValue
        : undefined;
}

function readSR(path) {
    const buf = fs.readFileSync(path);
    const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    const data = dcmjs.data.DicomMessage.readFile(ab);
    return dcmjs.data.DicomMetaDictionary.naturalizeDataset(data.dict);
}

// OHIF's _getMergedContentSequencesByTrackingUniqueIdentifiers.
function mergeByTrackingUID(groups) {
    const merged = new Map();
    for (const group of groups) {
        const content = asArray(group.ContentSequence);
        const uidItem = content.find(i => codeValue(i) === CODES.TrackingUniqueIdentifier);
        if (!expect(uidItem, "a measurement group without a Tracking Unique Identifier")) continue;
        const uid = uidItem.UID;
        if (!merged.has(uid)) merged.set(uid, [...content]);
        else
            merged.get(uid).push(
                ...content.filter(i => codeValue(i) !== CODES.TrackingUniqueIdentifier));
    }
    return merged;
}

// The number a NUM item holds: the floating point value where the writer
// gave one (DS has 16 characters), else the decimal string.
function numValue(item) {
    const mv = first(item.MeasuredValueSequence);
    if (!mv) return undefined;
    if (mv.FloatingPointValue !== undefined) return Number(first(mv.FloatingPointValue));
    return Number(mv.NumericValue);
}

function unitOf(item) {
    const mv = first(item.MeasuredValueSequence);
    return mv ? first(mv.MeasurementUnitsCodeSequence).CodeValue : undefined;
}

// OHIF's _processMeasurement, reduced to what decides the display: a
// merged group with a SCOORD (TID 1410 style) is drawn from that SCOORD;
// one without is a "non-geometric" measurement with no graphic of its own.
function toMeasurement(uid, content) {
    const graphic = content.find(i => i.ValueType === "SCOORD" || i.ValueType === "SCOORD3D");
    const tracking = content.find(i => codeValue(i) === CODES.TrackingIdentifier);
    const m = {
        uid,
        trackingIdentifier: tracking ? tracking.TextValue : undefined,
        nums: content.filter(i => i.ValueType === "NUM"),
        coords: [],
    };
    if (graphic) {
        const image = first(graphic.ContentSequence);
        m.coords.push({
            ValueType: graphic.ValueType,
            RelationshipType: graphic.RelationshipType,
            GraphicType: graphic.GraphicType,
            GraphicData: asArray(graphic.GraphicData).map(Number),
            ReferencedSOPSequence: image ? first(image.ReferencedSOPSequence) : undefined,
        });
    }
    return m;
}

function checkGraphic(m) {
    const where = "measurement " + m.trackingIdentifier;
    if (!expect(m.coords.length === 1, where + ": no graphic (SCOORD) to display")) return false;
    const c = m.coords[0];
    expect(c.ValueType === "SCOORD", where + ": graphic value type " + c.ValueType);
    // OHIF draws only SCOORDs the group CONTAINS (or a NUM is INFERRED FROM).
    expect(c.RelationshipType === "CONTAINS", where + ": graphic relationship " +
           c.RelationshipType);
    return expect(c.ReferencedSOPSequence && c.ReferencedSOPSequence.ReferencedSOPInstanceUID,
                  where + ": the graphic names no image");
}

function close(a, b) {
    return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
}

function checkSegment(m, want) {
    const where = "measurement " + want.tracking_identifier;
    const c = m.coords[0];
    expect(c.GraphicType === "POLYLINE", where + ": graphic type " + c.GraphicType);
    const d = c.GraphicData;
    expect(d.length >= 10 && d.length % 2 === 0, where + ": " + d.length + " graphic values");
    expect(d[0] === d[d.length - 2] && d[1] === d[d.length - 1],
           where + ": the polyline is not closed");
    for (let i = 0; i < d.length; i += 2) {
        // Image coordinates: 0,0 is the top-left corner of the top-left pixel.
        if (!expect(d[i] >= 0 && d[i] <= want.columns && d[i + 1] >= 0 && d[i + 1] <= want.rows,
                    where + ": point " + d[i] + "," + d[i + 1] + " lies off the " +
                    want.columns + " x " + want.rows + " image"))
            break;
    }
    const ref = c.ReferencedSOPSequence;
    expect(ref.ReferencedSOPInstanceUID === want.sop_instance,
           where + ": drawn on " + ref.ReferencedSOPInstanceUID + ", expected " +
           want.sop_instance);
    expect(ref.ReferencedSOPClassUID === want.sop_class,
           where + ": image SOP class " + ref.ReferencedSOPClassUID);

    const values = [
        [CODES.Area, "mm2", want.area_mm2, "area"],
        [CODES.LongAxis, "mm", want.diameter_mm, "long axis"],
        [CODES.Volume, "ml", want.volume_ml, "volume"],
    ];
    for (const [concept, unit, value, name] of values) {
        const nums = m.nums.filter(n => codeValue(n) === concept);
        if (!expect(nums.length === 1, where + ": " + nums.length + " " + name + " values"))
            continue;
        expect(unitOf(nums[0]) === unit, where + ": " + name + " unit " + unitOf(nums[0]));
        const got = numValue(nums[0]);
        expect(close(got, value), where + ": " + name + " " + got + ", expected " + value);
    }
}

function main(argv) {
    if (argv.length !== 2) {
        process.stderr.write("usage: dcmjs_sr_check.js SR EXPECTED.json\n");
        return 2;
    }
    const ds = readSR(argv[0]);
    const expected = JSON.parse(fs.readFileSync(argv[1], "utf8"));

    // OHIF shows only TID 1500 reports (checked on the root's concept name).
    if (!expect(ds.ConceptNameCodeSequence &&
                ds.ConceptNameCodeSequence.CodeValue === CODES.ImagingMeasurementReport,
                "the root is not an Imaging Measurement Report"))
        return 1;
    const content = asArray(ds.ContentSequence);
    const measurements = content.find(i => codeValue(i) === CODES.ImagingMeasurements);
    if (!expect(measurements, "no Imaging Measurements container")) return 1;
    const groups = asArray(measurements.ContentSequence)
        .filter(i => codeValue(i) === CODES.MeasurementGroup);
    const shown = [...mergeByTrackingUID(groups)].map(([uid, c]) => toMeasurement(uid, c));

    for (const m of shown) checkGraphic(m);
    for (const want of expected.segments) {
        const found = shown.filter(m => m.trackingIdentifier === want.tracking_identifier);
        if (expect(found.length === 1, want.tracking_identifier + ": " + found.length +
                   " measurements") && found[0].coords.length === 1)
            checkSegment(found[0], want);
    }
    expect(shown.length === expected.segments.length,
           shown.length + " measurements for " + expected.segments.length + " segments");

    for (const p of problems) process.stderr.write("dcmjs_sr_check: " + p + "\n");
    if (problems.length) return 1;
    process.stdout.write("dcmjs_sr_check: OK (" + groups.length + " measurement groups, " +
                         shown.length + " measurements, each with its graphic)\n");
    return 0;
}

process.exitCode = main(process.argv.slice(2));
