// yuzu_onnx_host: run a yuzu-onnx ISM model on the sequences of a FASTA file (C++17, ONNX Runtime).
//
//   yuzu_onnx_host ISM.onnx INPUT.fa OUTDIR
//
// The model's metadata (yuzu_onnx.*) gives the input name, layout ("ncl": (batch, A, L) or
// "nlc": (batch, L, A)), alphabet and sequence length. Every FASTA record is one-hot encoded
// (case-insensitive; for DNA/RNA the IUPAC ambiguity codes such as N give an all-zero column and
// U is read as T), all records are run as one batch on the CPU execution provider, and each model
// output is written to OUTDIR/<output name>.npy (float32, C order, first axis = record).
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Record {
  std::string name;
  std::string seq;
};

struct Meta {
  std::string format, input, layout, alphabet, window, version;
  int64_t seq_len = 0;
};

std::string lookup(Ort::ModelMetadata& md, OrtAllocator* alloc, const std::string& key, bool required) {
  Ort::AllocatedStringPtr v = md.LookupCustomMetadataMapAllocated(("yuzu_onnx." + key).c_str(), alloc);
  if (!v) {
    if (required) throw std::runtime_error("model has no 'yuzu_onnx." + key +
                                           "' metadata: is it a model converted by yuzu-onnx?");
    return "";
  }
  return std::string(v.get());
}

std::vector<Record> read_fasta(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read FASTA file " + path);
  std::vector<Record> recs;
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == ';') continue;
    if (line[0] == '>') {
      std::string name = line.substr(1);
      size_t b = name.find_first_not_of(" \t");
      name = b == std::string::npos ? "" : name.substr(b);
      size_t e = name.find_first_of(" \t");
      if (e != std::string::npos) name = name.substr(0, e);
      if (name.empty()) name = "record" + std::to_string(recs.size() + 1);
      recs.push_back({name, ""});
      continue;
    }
    if (recs.empty())
      throw std::runtime_error(path + ":" + std::to_string(lineno) +
                               ": sequence data before the first '>' header (not a FASTA file?)");
    for (char c : line)
      if (!std::isspace(static_cast<unsigned char>(c))) recs.back().seq.push_back(c);
  }
  if (recs.empty()) throw std::runtime_error("no FASTA records in " + path);
  return recs;
}

// Column of each byte in the one-hot encoding: >= 0 the alphabet row, -1 all-zero column, -2 invalid.
std::vector<int> letter_table(const std::string& alphabet) {
  std::vector<int> t(256, -2);
  for (size_t i = 0; i < alphabet.size(); ++i) {
    unsigned char up = static_cast<unsigned char>(std::toupper(static_cast<unsigned char>(alphabet[i])));
    t[up] = t[std::tolower(up)] = static_cast<int>(i);
  }
  auto set = [&](char c, int v) {
    t[static_cast<unsigned char>(c)] = v;
    t[static_cast<unsigned char>(std::tolower(static_cast<unsigned char>(c)))] = v;
  };
  const bool dna = alphabet == "ACGT", rna = alphabet == "ACGU";
  if (dna || rna) {
    for (char c : std::string("NRYSWKMBDHV")) set(c, -1);
    if (dna) set('U', t['T']);
    if (rna) set('T', t['U']);
  } else {
    for (char c : std::string("X*")) if (t[static_cast<unsigned char>(c)] == -2) set(c, -1);
  }
  for (char c : std::string("-.")) if (t[static_cast<unsigned char>(c)] == -2) set(c, -1);
  return t;
}

void write_npy(const std::filesystem::path& path, const std::vector<int64_t>& shape,
               const float* data, size_t count) {
  std::ostringstream dict;
  dict << "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) dict << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) dict << ",";
  dict << "), }";
  std::string header = dict.str();
  const size_t preamble = 10;  // magic (6) + version (2) + header length (2)
  size_t total = preamble + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + path.string());
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(magic, 8);
  const uint16_t hlen = static_cast<uint16_t>(header.size());
  const char hl[2] = {static_cast<char>(hlen & 0xff), static_cast<char>(hlen >> 8)};
  out.write(hl, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
  if (!out) throw std::runtime_error("error writing " + path.string());
}

int run(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " ISM.onnx INPUT.fa OUTDIR\n";
    return 2;
  }
  const std::string model_path = argv[1], fasta_path = argv[2];
  const std::filesystem::path outdir = argv[3];
  {
    const uint16_t one = 1;
    if (*reinterpret_cast<const uint8_t*>(&one) != 1)
      throw std::runtime_error("big-endian hosts are not supported ('<f4' output)");
  }

  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "yuzu_onnx_host");
  Ort::SessionOptions opts;  // no provider appended: ONNX Runtime's CPU execution provider
  Ort::Session session(env, model_path.c_str(), opts);
  Ort::AllocatorWithDefaultOptions alloc;

  Ort::ModelMetadata md = session.GetModelMetadata();
  Meta m;
  m.format = lookup(md, alloc, "format", true);
  if (m.format.rfind("ism/1", 0) != 0)
    throw std::runtime_error("unsupported yuzu_onnx.format '" + m.format + "' (this host reads ism/1)");
  m.input = lookup(md, alloc, "input", true);
  m.layout = lookup(md, alloc, "layout", true);
  m.alphabet = lookup(md, alloc, "alphabet", true);
  m.window = lookup(md, alloc, "window", false);
  m.version = lookup(md, alloc, "version", false);
  m.seq_len = std::stoll(lookup(md, alloc, "seq_len", true));
  if (m.layout != "ncl" && m.layout != "nlc")
    throw std::runtime_error("unknown yuzu_onnx.layout '" + m.layout + "' (expected ncl or nlc)");

  if (session.GetInputCount() != 1)
    throw std::runtime_error("expected a model with one input, got " + std::to_string(session.GetInputCount()));
  std::string input_name = session.GetInputNameAllocated(0, alloc).get();
  if (input_name != m.input)
    throw std::runtime_error("metadata names input '" + m.input + "' but the model's input is '" + input_name + "'");
  std::vector<int64_t> in_shape = session.GetInputTypeInfo(0).GetTensorTypeAndShapeInfo().GetShape();

  std::vector<std::string> out_names;
  for (size_t i = 0; i < session.GetOutputCount(); ++i)
    out_names.emplace_back(session.GetOutputNameAllocated(i, alloc).get());

  std::string eps;
  for (const std::string& p : Ort::GetAvailableProviders()) eps += (eps.empty() ? "" : ", ") + p;
  std::cout << "onnxruntime " << Ort::GetVersionString() << " (headers: API " << ORT_API_VERSION << ")\n"
            << "execution provider: CPUExecutionProvider (available: " << eps << ")\n"
            << "model: " << model_path << " [yuzu-onnx " << (m.version.empty() ? "?" : m.version)
            << ", " << m.format << "] input '" << m.input << "' layout " << m.layout << ", alphabet "
            << m.alphabet << ", length " << m.seq_len << ", window " << m.window << "\n";

  // ---- read and one-hot encode the sequences
  std::vector<Record> recs = read_fasta(fasta_path);
  const std::vector<int> table = letter_table(m.alphabet);
  const int64_t A = static_cast<int64_t>(m.alphabet.size()), L = m.seq_len;
  const int64_t n = static_cast<int64_t>(recs.size());
  for (const Record& r : recs) {
    if (static_cast<int64_t>(r.seq.size()) != L)
      throw std::runtime_error("sequence '" + r.name + "' has length " + std::to_string(r.seq.size()) +
                               "; the model needs exactly " + std::to_string(L));
    for (size_t i = 0; i < r.seq.size(); ++i)
      if (table[static_cast<unsigned char>(r.seq[i])] == -2)
        throw std::runtime_error("sequence '" + r.name + "' has the letter '" + std::string(1, r.seq[i]) +
                                 "' at position " + std::to_string(i + 1) + ", not in alphabet " + m.alphabet);
  }
  // a fixed batch size in the model (e.g. 1) is honoured by running chunks; the last chunk is padded
  const int64_t chunk = (!in_shape.empty() && in_shape[0] > 0) ? in_shape[0] : n;
  std::cout << "sequences: " << n << " from " << fasta_path << " (batch " << chunk << ")\n";

  std::vector<const char*> out_cstr;
  for (const std::string& s : out_names) out_cstr.push_back(s.c_str());
  const char* in_cstr[] = {input_name.c_str()};
  Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);

  std::vector<std::vector<float>> results(out_names.size());
  std::vector<std::vector<int64_t>> shapes(out_names.size());
  for (int64_t start = 0; start < n; start += chunk) {
    std::vector<float> x(static_cast<size_t>(chunk * A * L), 0.0f);
    for (int64_t b = 0; b < chunk && start + b < n; ++b) {
      const std::string& s = recs[static_cast<size_t>(start + b)].seq;
      for (int64_t i = 0; i < L; ++i) {
        int a = table[static_cast<unsigned char>(s[static_cast<size_t>(i)])];
        if (a < 0) continue;
        size_t idx = m.layout == "ncl" ? static_cast<size_t>((b * A + a) * L + i)
                                       : static_cast<size_t>((b * L + i) * A + a);
        x[idx] = 1.0f;
      }
    }
    std::vector<int64_t> shape = m.layout == "ncl" ? std::vector<int64_t>{chunk, A, L}
                                                   : std::vector<int64_t>{chunk, L, A};
    Ort::Value input = Ort::Value::CreateTensor<float>(mem, x.data(), x.size(), shape.data(), shape.size());
    std::vector<Ort::Value> outs = session.Run(Ort::RunOptions{nullptr}, in_cstr, &input, 1,
                                               out_cstr.data(), out_cstr.size());
    const int64_t keep = std::min(chunk, n - start);
    for (size_t k = 0; k < outs.size(); ++k) {
      auto info = outs[k].GetTensorTypeAndShapeInfo();
      if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        throw std::runtime_error("output '" + out_names[k] + "' is not float32");
      std::vector<int64_t> os = info.GetShape();
      if (os.empty() || os[0] != chunk)
        throw std::runtime_error("output '" + out_names[k] + "' has no batch axis of size " + std::to_string(chunk));
      const size_t per = info.GetElementCount() / static_cast<size_t>(chunk);
      const float* d = outs[k].GetTensorData<float>();
      results[k].insert(results[k].end(), d, d + per * static_cast<size_t>(keep));
      os[0] = n;
      shapes[k] = os;
    }
  }

  std::filesystem::create_directories(outdir);
  for (size_t k = 0; k < out_names.size(); ++k) {
    std::filesystem::path p = outdir / (out_names[k] + ".npy");
    write_npy(p, shapes[k], results[k].data(), results[k].size());
    std::cout << "wrote " << p.string() << " shape (";
    for (size_t i = 0; i < shapes[k].size(); ++i) std::cout << (i ? ", " : "") << shapes[k][i];
    std::cout << ")\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Ort::Exception& e) {
    std::cerr << "error (onnxruntime): " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 1;
}
