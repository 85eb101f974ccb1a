// The articles' document editor as a C++17 host of the plugbox C ABI: it holds a document,
// grants plugins `doc.get_text` / `doc.set_text` host capabilities, loads two Python plugins
// under their grants, calls their commands and shows where the audit log is.
//
// Build (from the repository root, after `cargo build`):
//   g++ -std=c++17 -Iinclude examples/cpp/editor.cpp -Ltarget/debug -lplugbox
//       -Wl,-rpath,$PWD/target/debug -o editor       (one command line)
// Run (as root, so each plugin runs under a uid of its own): ./editor examples/plugins /tmp/ed
#include "plugbox.h"

#include <cstdio>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

// The document, shared with the capability callbacks (which run on engine threads).
struct Document {
    std::mutex lock;
    std::string text;
};

// A string the library returned, freed with plugbox_string_free.
using Owned = std::unique_ptr<char, decltype(&plugbox_string_free)>;

// Throws the library's error (code and message) if there is one.
static void check(PlugboxError *err) {
    if (!err) return;
    std::string what = std::string(plugbox_error_code(err)) + ": " + plugbox_error_message(err);
    plugbox_error_free(err);
    throw std::runtime_error(what);
}

// A JSON string literal for `s`.
static std::string quote(const std::string &s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') { out += '\\'; out += char(c); }
        else if (c == '\n') out += "\\n";
        else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof buf, "\\u%04x", c); out += buf; }
        else out += char(c);
    }
    return out + "\"";
}

// The string member `key` of a flat JSON object (enough for `{"text": "..."}`); throws if absent.
static std::string member(const std::string &json, const std::string &key) {
    size_t at = json.find(quote(key) + ":\"");
    if (at == std::string::npos) throw std::invalid_argument("no string member " + key);
    std::string out;
    for (size_t i = at + key.size() + 4; i < json.size(); ++i) {
        char c = json[i];
        if (c == '"') return out;
        if (c != '\\') { out += c; continue; }
        char e = json[++i];
        if (e == 'n') out += '\n'; else if (e == 't') out += '\t'; else if (e == 'r') out += '\r';
        else if (e == 'u') {  // \u00XX only: the plugins here write ASCII control characters
            out += char(std::stoi(json.substr(i + 1, 4), nullptr, 16)); i += 4;
        } else out += e;
    }
    throw std::invalid_argument("unterminated string");
}

// doc.get_text: the document as a JSON string.
static void get_text(void *user, const char *, const char *, const char *, PlugboxReply *reply) {
    auto *doc = static_cast<Document *>(user);
    std::lock_guard<std::mutex> hold(doc->lock);
    plugbox_reply_ok(reply, quote(doc->text).c_str());
}

// doc.set_text {text}: replaces the document (at most 1 MiB).
static void set_text(void *user, const char *, const char *plugin, const char *args,
                     PlugboxReply *reply) {
    try {
        std::string text = member(args, "text");
        if (text.size() > (1u << 20)) return plugbox_reply_error(reply, "too_large", "1 MiB at most");
        auto *doc = static_cast<Document *>(user);
        std::lock_guard<std::mutex> hold(doc->lock);
        doc->text = text;
        std::printf("  (document rewritten by %s)\n", plugin);
        plugbox_reply_ok(reply, "null");
    } catch (const std::exception &e) {  // never let an exception cross into the library
        plugbox_reply_error(reply, "invalid", e.what());
    }
}

static std::string call(PlugboxEngine *engine, const char *plugin, const char *command) {
    char *result = nullptr;
    PlugboxError *err = plugbox_engine_call(engine, plugin, command, "{}", &result);
    if (err) {
        std::string what = std::string("error ") + plugbox_error_code(err);
        plugbox_error_free(err);
        return what;
    }
    return Owned(result, plugbox_string_free).get();
}

int main(int argc, char **argv) {
    if (argc != 3) { std::fprintf(stderr, "usage: editor PLUGINS_DIR WORK_DIR\n"); return 2; }
    const std::string plugins = argv[1], work = argv[2];
    Document doc;
    doc.text = "the quick brown fox\njumps over the lazy dog";
    PlugboxEngine *engine = nullptr;
    try {
        std::string config = "{\"audit_log\": " + quote(work + "/audit.jsonl") +
                             ", \"state_dir\": " + quote(work + "/state") + "}";
        check(plugbox_engine_new(config.c_str(), &engine));
        check(plugbox_engine_register(engine, "doc.get_text", get_text, &doc));
        check(plugbox_engine_register(engine, "doc.set_text", set_text, &doc));

        // Each plugin gets exactly what its grant allows (the manifest asks; the host decides).
        const char *counter = R"({"grant": {"schema": 1, "capabilities": {"log": {}, "doc.get_text": {}}}})";
        const char *titler = R"({"grant": {"schema": 1, "capabilities":
            {"doc.get_text": {}, "doc.set_text": {"max_bytes": 1048576}}}})";
        check(plugbox_engine_load(engine, (plugins + "/word-count").c_str(), counter, nullptr));
        char *loaded = nullptr;
        check(plugbox_engine_load(engine, (plugins + "/title-case").c_str(), titler, &loaded));
        std::printf("loaded %s\n", Owned(loaded, plugbox_string_free).get());

        std::printf("document:\n%s\n\n", doc.text.c_str());
        std::printf("word-count.count -> %s\n", call(engine, "word-count", "count").c_str());
        std::printf("title-case.apply -> %s\n", call(engine, "title-case", "apply").c_str());
        std::printf("word-count.nope -> %s\n", call(engine, "word-count", "nope").c_str());
        std::printf("\ndocument:\n%s\n\n", doc.text.c_str());

        // A grant of `log` alone: the load is refused, naming what is missing.
        check(plugbox_engine_unload(engine, "word-count"));
        const char *stingy = R"({"grant": {"schema": 1, "capabilities": {"log": {}}}})";
        PlugboxError *err = plugbox_engine_load(engine, (plugins + "/word-count").c_str(), stingy, nullptr);
        std::printf("with only `log` granted: %s\n", err ? plugbox_error_code(err) : "loaded?!");
        plugbox_error_free(err);

        char *event = nullptr;
        int events = 0;
        while (!plugbox_engine_next_event(engine, 0, &event) && event) {
            ++events;
            plugbox_string_free(event);
        }
        std::printf("%d engine events so far\n", events);

        check(plugbox_engine_shutdown(engine));  // unloads the plugins, seals the audit log
        char *path = nullptr;
        check(plugbox_engine_audit_path(engine, &path));
        std::printf("audit log: %s\n", Owned(path, plugbox_string_free).get());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "editor: %s\n", e.what());
        plugbox_engine_free(engine);
        return 1;
    }
    plugbox_engine_free(engine);
    return 0;
}
