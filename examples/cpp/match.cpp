// Match a rectified stereo pair with a stereodeploy matcher ONNX file through onnxruntime's C++ API, and write the
// disparity as PFM (and, when the file has them, the validity mask as PGM and the confidence as PFM).
//
//   match --model matcher.onnx --left im0.png --right im1.png --out disp.pfm [--valid v.pgm]
//         [--confidence c.pfm] [--threads N] [--max-memory-mb N]
//
// The contract comes from the JSON sidecar beside the model (matcher.onnx.json, written by
// `stereodeploy export-matcher`): the format, the max disparity, the output names and the memory the file needs
// for a given image size. Images: 8-bit PNG through libpng, fed as RGBA uint8 (H, W, 4); the file does the rest.
// Needs onnxruntime >= 1.21 (the API version of the headers it is built against); see README.md.
#include <onnxruntime_cxx_api.h>
#include <png.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Image {
  std::vector<uint8_t> rgba;
  int64_t height = 0, width = 0;
};

Image read_png(const std::string& path) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&png, path.c_str())) {
    throw std::runtime_error(path + ": not a readable PNG (" + png.message + ")");
  }
  png.format = PNG_FORMAT_RGBA;  // gray, palette and 16-bit files are converted; colours as stored
  Image img;
  img.height = png.height;
  img.width = png.width;
  img.rgba.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, img.rgba.data(), 0, nullptr)) {
    throw std::runtime_error(path + ": " + png.message);
  }
  return img;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + " is missing: export the model with `stereodeploy export-matcher`, "
                                    "which writes it beside the .onnx file");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The string value of "key" in the sidecar's flat "metadata" object (every value there is a JSON string), or
// `fallback`. Enough JSON for that object: escapes \" \\ \/ \n \t and \u00XX.
std::string meta(const std::string& json, const std::string& key, const std::string& fallback = "") {
  size_t at = json.find("\"" + key + "\"");
  if (at == std::string::npos) return fallback;
  at = json.find(':', at + key.size() + 2);
  at = json.find('"', at);
  std::string out;
  for (size_t i = at + 1; i < json.size() && json[i] != '"'; ++i) {
    if (json[i] != '\\') { out += json[i]; continue; }
    char e = json[++i];
    if (e == 'n') out += '\n';
    else if (e == 't') out += '\t';
    else if (e == 'u') { out += static_cast<char>(std::stoi(json.substr(i + 1, 4), nullptr, 16)); i += 4; }
    else out += e;
  }
  return out;
}

void write_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp-" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot write " + path);
}

// Float32 (H, W) map as a Middlebury PFM: little-endian, rows bottom-up.
std::string pfm(const float* data, int64_t height, int64_t width) {
  std::string out = "Pf\n" + std::to_string(width) + " " + std::to_string(height) + "\n-1\n";
  for (int64_t y = height - 1; y >= 0; --y) {
    out.append(reinterpret_cast<const char*>(data + y * width), static_cast<size_t>(4 * width));
  }
  return out;
}

// uint8 (H, W) 0/1 mask as a binary PGM of 0/255.
std::string pgm(const uint8_t* data, int64_t height, int64_t width) {
  std::string out = "P5\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n";
  for (int64_t i = 0; i < height * width; ++i) out += static_cast<char>(data[i] ? 255 : 0);
  return out;
}

// Peak bytes the file needs for a (height, width) pair, by the sidecar's memory model; 0 if it has none.
double peak_bytes(const std::string& json, int64_t height, int64_t width) {
  std::string fixed = meta(json, "stereodeploy.matcher.peak_bytes_fixed");
  if (fixed.empty()) return 0;
  auto bytes = [&](const std::string& name) {  // 0 for a number older files do not carry
    return std::stod(meta(json, "stereodeploy.matcher.peak_bytes_" + name, "0"));
  };
  double volumes = bytes("per_column") * width;  // in strips: at least this, up to the strip budget, at most the image
  if (bytes("strip_per_pixel") > 0) {
    volumes = std::min(bytes("strip_per_pixel") * height * width, std::max(bytes("strip"), volumes));
  }
  return bytes("fixed") + bytes("per_pixel") * height * width + volumes;
}

int run(const std::map<std::string, std::string>& args) {
  const std::string model = args.at("model");
  const std::string json = read_text(model + ".json");
  const std::string format = meta(json, "stereodeploy.format");
  if (format.rfind("matcher/", 0) != 0) {
    throw std::runtime_error(model + " is not a matcher file (format '" + format + "'): write one with "
                             "`stereodeploy export-matcher`");
  }
  const Image left = read_png(args.at("left")), right = read_png(args.at("right"));
  if (left.height != right.height || left.width != right.width) {
    throw std::runtime_error("the images differ in size");
  }
  const double gib = 1024.0 * 1024.0 * 1024.0;
  double limit = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
  if (args.count("max-memory-mb")) limit = std::stod(args.at("max-memory-mb")) * 1024.0 * 1024.0;
  const double need = peak_bytes(json, left.height, left.width);
  if (need > limit) {
    std::ostringstream msg;
    msg.precision(2);
    msg << std::fixed << "a " << left.width << "x" << left.height << " pair needs about " << need / gib
        << " GiB with this file (max disparity " << meta(json, "stereodeploy.max_disp") << "), more than the "
        << limit / gib << " GiB allowed: downscale the images or export a file with a smaller --max-disp";
    throw std::runtime_error(msg.str());
  }

  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "stereodeploy");
  Ort::SessionOptions options;
  options.DisableCpuMemArena();  // the arena keeps every block size it ever held: twice the peak memory
  if (args.count("threads")) options.SetIntraOpNumThreads(std::stoi(args.at("threads")));
  Ort::Session session(env, model.c_str(), options);

  auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  const std::vector<int64_t> shape{left.height, left.width, 4};
  auto tensor = [&](const Image& img) {
    return Ort::Value::CreateTensor<uint8_t>(memory, const_cast<uint8_t*>(img.rgba.data()), img.rgba.size(),
                                             shape.data(), shape.size());
  };
  std::vector<Ort::Value> inputs;
  inputs.push_back(tensor(left));
  inputs.push_back(tensor(right));
  const char* input_names[] = {"left", "right"};
  std::vector<std::string> wanted{"disparity"};  // plus the optional outputs the sidecar lists
  for (const char* extra : {"valid", "confidence"}) {
    if (json.find(std::string("\"name\": \"") + extra + "\"") != std::string::npos) wanted.push_back(extra);
  }
  std::vector<const char*> output_names;
  for (const auto& n : wanted) output_names.push_back(n.c_str());

  const auto start = std::chrono::steady_clock::now();
  auto outputs = session.Run(Ort::RunOptions{nullptr}, input_names, inputs.data(), inputs.size(),
                             output_names.data(), output_names.size());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::string out = args.at("out");
  write_atomic(out, pfm(outputs[0].GetTensorData<float>(), left.height, left.width));
  std::string density;
  for (size_t i = 1; i < wanted.size(); ++i) {
    if (wanted[i] == "valid") {
      const uint8_t* v = outputs[i].GetTensorData<uint8_t>();
      const int64_t n = left.height * left.width;
      std::ostringstream d;
      d.precision(1);
      d << std::fixed << ", " << 100.0 * static_cast<double>(std::count_if(v, v + n, [](uint8_t b) { return b; })) / n
        << " % valid";
      density = d.str();
      if (args.count("valid")) write_atomic(args.at("valid"), pgm(v, left.height, left.width));
    } else if (wanted[i] == "confidence" && args.count("confidence")) {
      write_atomic(args.at("confidence"), pfm(outputs[i].GetTensorData<float>(), left.height, left.width));
    }
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("%s: %lldx%lld disparity in %.3f s (peak rss %.0f MiB, onnxruntime %s%s)\n", out.c_str(),
              static_cast<long long>(left.width), static_cast<long long>(left.height), seconds,
              usage.ru_maxrss / 1024.0, Ort::GetVersionString().c_str(), density.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0) break;
    args[key.substr(2)] = argv[i + 1];
  }
  for (const char* key : {"model", "left", "right", "out"}) {
    if (!args.count(key)) {
      std::cerr << "usage: match --model M.onnx --left L.png --right R.png --out OUT.pfm [--valid V.pgm] "
                   "[--confidence C.pfm] [--threads N] [--max-memory-mb N]\n";
      return 2;
    }
  }
  try {
    return run(args);
  } catch (const std::exception& e) {  // Ort::Exception too: the graph's checks name what is wrong
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
