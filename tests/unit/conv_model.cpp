// A small convolutional TorchScript model for the sliding-window tests:
// two 3x3x3 convolutions (receptive radius 2) with fixed weights, so that
// patch borders matter unless the window keeps a margin.
#include <torch/script.h>

#include <cmath>
#include <vector>

namespace {

torch::Tensor fixed(std::vector<int64_t> shape, double phase)
{
    int64_t n = 1;
    for (int64_t d : shape)
        n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++)
        v[static_cast<size_t>(i)] = static_cast<float>(std::sin(1.7 * i + phase));
    return torch::from_blob(v.data(), shape, torch::kFloat).clone();
}

} // namespace

extern "C" int test_write_conv_model(const char *path)
{
    try {
        torch::jit::Module m("TestConv");
        m.register_parameter("w1", fixed({4, 1, 3, 3, 3}, 0.1), false);
        m.register_parameter("b1", fixed({4}, 0.7), false);
        m.register_parameter("w2", fixed({3, 4, 3, 3, 3}, 1.3), false);
        m.register_parameter("b2", fixed({3}, 2.1), false);
        m.define(R"(
def forward(self, x):
    h = torch.relu(torch.conv3d(x, self.w1, self.b1, [1, 1, 1], [1, 1, 1]))
    return torch.conv3d(h, self.w2, self.b2, [1, 1, 1], [1, 1, 1])
)");
        m.save(path);
        return 0;
    } catch (...) {
        return -1;
    }
}
