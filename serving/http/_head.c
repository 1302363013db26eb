/* HTTP/1.1 heads on the forwarding path, read and written in C where a loop compiled by mypyc still works
   byte by byte or object by object: `scan` reads an upstream response head (serving/http/framing.py), `fields`
   decodes a request's header fields (serving/http/connection.py), `request` writes the usual upstream request
   head (serving/http/exchange.py). Built beside the compiled modules by setup.py; a pure-Python build does
   without it, with the same results. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Whether the field name p[0:n] is `name` (lower-case bytes), ignoring ASCII case in p. */
static int
name_is(const char *p, Py_ssize_t n, PyObject *name)
{
    if (PyBytes_GET_SIZE(name) != n)
        return 0;
    const unsigned char *q = (const unsigned char *)PyBytes_AS_STRING(name);
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)p[k];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != q[k])
            return 0;
    }
    return 1;
}

static PyObject *
answer(Py_ssize_t end, long found)
{
    PyObject *first = PyLong_FromSsize_t(end);
    if (first == NULL)
        return NULL;
    PyObject *second = PyLong_FromLong(found);
    if (second == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(first);
        Py_DECREF(second);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, first);
    PyTuple_SET_ITEM(pair, 1, second);
    return pair;
}

/* The names of the last call, checked, and the first bytes they start with: the engine passes the same tuple
   on every call, so the checks run once. */
static PyObject *known_names = NULL;
static unsigned char first_bytes[256];

static int
learn(PyObject *names)
{
    if (names == known_names)
        return 0;
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    if (count < 1) {
        PyErr_SetString(PyExc_TypeError, "scan: names must not be empty");
        return -1;
    }
    unsigned char firsts[256] = {0};
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *name = PyTuple_GET_ITEM(names, k);
        if (!PyBytes_Check(name) || PyBytes_GET_SIZE(name) == 0) {
            PyErr_SetString(PyExc_TypeError, "scan: names must be non-empty bytes");
            return -1;
        }
        firsts[(unsigned char)PyBytes_AS_STRING(name)[0]] = 1;
    }
    memcpy(first_bytes, firsts, sizeof firsts);
    Py_INCREF(names);
    Py_XSETREF(known_names, names);
    return 0;
}

static PyObject *
scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "scan(head: bytes, start: int, names: tuple[bytes, ...])");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    PyObject *names = args[2];
    if (learn(names) < 0)
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || start >= size)
        return answer(-1, 0);
    while (start < size && (data[start] == '\r' || data[start] == '\n'))
        start++; /* empty lines before a response, which llhttp skips */
    if (start == size)
        return answer(-1, 0);
    long found = 0;
    const char *eol = memchr(data + start, '\n', (size_t)(size - start)); /* the status line */
    if (eol == NULL)
        return answer(-1, 0);
    Py_ssize_t i = eol - data + 1;
    while (i < size) {
        const char *line = data + i;
        if (*line == '\r') {
            /* The empty line (llhttp has refused a bare CR): the CRLF before it ends the last field. */
            return i + 1 < size ? answer(i - 2, found) : answer(-1, 0);
        }
        eol = memchr(line, '\n', (size_t)(size - i));
        if (eol == NULL)
            break;
        Py_ssize_t length = eol - line;
        unsigned char first = (unsigned char)*line;
        if (first >= 'A' && first <= 'Z')
            first += 'a' - 'A';
        if (first_bytes[first]) {
            /* A name is at least one byte and ends at its colon (llhttp has refused space before it). */
            const char *colon = length > 1 ? memchr(line + 1, ':', (size_t)(length - 1)) : NULL;
            Py_ssize_t name_length = colon != NULL ? colon - line : length;
            for (Py_ssize_t k = 0; k < count; k++) {
                if (name_is(line, name_length, PyTuple_GET_ITEM(names, k))) {
                    found |= k == 0 ? 1 : 2;
                    break;
                }
            }
        }
        i += length + 1;
    }
    return answer(-1, 0);
}

/* Whether `text` is read here: an exact str, already ready. Hashing and comparing one runs no Python code (a
   subclass's __hash__ or __eq__ could change the fields while they are read), and its length is known before
   it is copied. Anything else is left to the caller's Python. */
static int
plain(PyObject *text)
{
    return PyUnicode_CheckExact(text) && PyUnicode_IS_READY(text);
}

/* Append the Latin-1 bytes of the plain string `text` at *out; 0 if it holds a character beyond Latin-1. */
static int
put(char **out, PyObject *text)
{
    if (PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND)
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    memcpy(*out, PyUnicode_1BYTE_DATA(text), (size_t)n);
    *out += n;
    return 1;
}

static PyObject *
request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyList_Check(args[2])
        || !PyAnySet_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "request(method: str, target: str, fields: list[tuple[str, str]], dropped: frozenset)");
        return NULL;
    }
    PyObject *method = args[0], *target = args[1], *fields = args[2], *dropped = args[3];
    if (!plain(method) || !plain(target) || !PyFrozenSet_CheckExact(dropped))
        Py_RETURN_NONE;
    static const char version[] = " HTTP/1.1\r\n";
    int host = 0;
    Py_ssize_t count = PyList_GET_SIZE(fields);
    Py_ssize_t size = PyUnicode_GET_LENGTH(method) + 1 + PyUnicode_GET_LENGTH(target);
    size += (Py_ssize_t)strlen(version) + 2;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *field = PyList_GET_ITEM(fields, k);
        if (!PyTuple_Check(field) || PyTuple_GET_SIZE(field) != 2
            || !PyUnicode_Check(PyTuple_GET_ITEM(field, 0)) || !PyUnicode_Check(PyTuple_GET_ITEM(field, 1))) {
            PyErr_SetString(PyExc_TypeError, "request: fields must be (name, value) pairs of str");
            return NULL;
        }
        PyObject *name = PyTuple_GET_ITEM(field, 0), *value = PyTuple_GET_ITEM(field, 1);
        if (!plain(name) || !plain(value))
            Py_RETURN_NONE;
        int hop = PySet_Contains(dropped, name);
        if (hop < 0)
            return NULL;
        if (hop)
            Py_RETURN_NONE;
        if (!host && PyUnicode_GET_LENGTH(name) == 4 && PyUnicode_CompareWithASCIIString(name, "host") == 0)
            host = 1;
        size += PyUnicode_GET_LENGTH(name) + 2 + PyUnicode_GET_LENGTH(value) + 2;
    }
    if (!host)
        Py_RETURN_NONE;
    PyObject *head = PyBytes_FromStringAndSize(NULL, size);
    if (head == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(head);
    if (!put(&out, method))
        goto wide;
    *out++ = ' ';
    if (!put(&out, target))
        goto wide;
    memcpy(out, version, strlen(version));
    out += strlen(version);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *field = PyList_GET_ITEM(fields, k);
        if (!put(&out, PyTuple_GET_ITEM(field, 0)))
            goto wide;
        *out++ = ':';
        *out++ = ' ';
        if (!put(&out, PyTuple_GET_ITEM(field, 1)))
            goto wide;
        *out++ = '\r';
        *out++ = '\n';
    }
    *out++ = '\r';
    *out++ = '\n';
    return head;
wide:
    Py_DECREF(head);
    Py_RETURN_NONE;
}

/* A str of the Latin-1 bytes p[0:n], ASCII upper case lowered when `lower`. */
static PyObject *
latin1(const char *p, Py_ssize_t n, int lower)
{
    unsigned char high = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        high |= (unsigned char)p[k];
    PyObject *text = PyUnicode_New(n, high < 128 ? 127 : 255);
    if (text == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    if (lower) {
        for (Py_ssize_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)p[k];
            out[k] = c >= 'A' && c <= 'Z' ? (Py_UCS1)(c + ('a' - 'A')) : c;
        }
    } else {
        memcpy(out, p, (size_t)n);
    }
    return text;
}

static PyObject *
fields(PyObject *module, PyObject *raw)
{
    (void)module;
    if (!PyList_Check(raw)) {
        PyErr_SetString(PyExc_TypeError, "fields(raw: list[tuple[bytes, bytes]])");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(raw);
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *pair = PyList_GET_ITEM(raw, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(pair, 0))
            || !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "fields: raw must hold (name, value) pairs of bytes");
            goto failed;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        PyObject *field = PyTuple_New(2);
        if (field == NULL)
            goto failed;
        PyList_SET_ITEM(out, k, field);
        PyObject *text = latin1(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), 1);
        if (text == NULL)
            goto failed;
        PyTuple_SET_ITEM(field, 0, text);
        text = latin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), 0);
        if (text == NULL)
            goto failed;
        PyTuple_SET_ITEM(field, 1, text);
    }
    return out;
failed:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(head, start, names) -> (end, found)\n\n"
     "Where the response head that starts at `start` in `head` ends (the index of the CRLF CRLF after its "
     "last field; -1 if it has not ended) and which fields it has: bit 1 a field named names[0], bit 2 one "
     "named any other of `names` (lower-case, compared ignoring ASCII case). Assumes a head llhttp has "
     "accepted."},
    {"request", (PyCFunction)(void (*)(void))request, METH_FASTCALL,
     "request(method, target, fields, dropped) -> bytes | None\n\n"
     "The request head `method target HTTP/1.1` with `fields` (name, value pairs) in order, in Latin-1; None "
     "if a name is in `dropped`, none is `host`, a text is not an exact str or holds a character beyond "
     "Latin-1 (the caller writes the head then)."},
    {"fields", (PyCFunction)(void (*)(void))fields, METH_O,
     "fields(raw) -> list[tuple[str, str]]\n\n"
     "Header fields as llhttp read them, (name, value) pairs of bytes, decoded from Latin-1 with names in "
     "ASCII lower case."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_head",
    .m_doc = "HTTP/1.1 heads read and written in C for serving.http.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__head(void)
{
    return PyModule_Create(&definition);
}
