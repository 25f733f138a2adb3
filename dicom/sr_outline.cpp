// sr_outline.cpp — the planar region of a segment (see sr_outline.h).

#include "dicom/sr_outline.h"

#include <algorithm>
#include <cmath>

namespace ainode_dicom {

std::vector<int64_t> slice_counts(const uint8_t *labels, int nx, int ny, int nz)
{
    std::vector<int64_t> counts((size_t)nz * 256, 0);
    const size_t plane = (size_t)nx * (size_t)ny;
    for (int k = 0; k < nz; k++) {
        const uint8_t *p = labels + (size_t)k * plane;
        int64_t *c = &counts[(size_t)k * 256];
        for (size_t i = 0; i < plane; i++)
            c[p[i]]++;
    }
    return counts;
}

namespace {

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

} // namespace

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

} // namespace ainode_dicom
