//! The fixed inputs the accuracy gate ([`crate::model::accuracy`]) runs through a quantized
//! file and its FP32 file: [`SENTENCES`] for embedders and classifiers, [`RERANK`] (queries
//! with candidate documents) for rerankers.
//!
//! The first 50 sentences are the probe set of `scripts/minilm_common.py`, in its order, so the
//! gate's numbers compare with the measurements of `scripts/bench_minilm_int8.py`: short and
//! odd inputs (`"OK"`, `"yes"`, `"Thanks!!!"`, `"?!?!"`: int8 files do worst on these), questions,
//! code, numbers, German, French, Spanish, Japanese and Russian, and three long sentences; two
//! paragraphs of 150 to 250 tokens follow, for the long-input path.

/// Sentences for embedders (cosine of the pooled vectors) and classifiers (the label each
/// gets).
pub const SENTENCES: [&str; 52] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "How do I reset my password?",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "I love this product, it works great!",
    "This is the worst purchase I have ever made.",
    "The weather today is sunny with a light breeze.",
    "It will rain heavily tomorrow afternoon.",
    "Quantum computers use qubits instead of classical bits.",
    "The mitochondria is the powerhouse of the cell.",
    "fn main() { println!(\"hello, world\"); }",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "def add(a, b): return a + b",
    "The invoice total is $1,234.56, due on 2024-03-15.",
    "Call me at 555-0123 after 6 pm.",
    "Error: connection refused (errno 111) while connecting to 10.0.0.7:5432",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat est assis sur le tapis.",
    "¿Dónde está la biblioteca?",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "OK",
    "yes",
    "Thanks!!!",
    "?!?!",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Researchers discovered a new species of frog in the Amazon rainforest.",
    "Please remember to bring your passport and boarding pass to the airport.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Our team won the championship in overtime last night.",
    "Machine learning models can be compressed with quantization.",
    "Int8 quantization trades a little accuracy for speed.",
    "The cat sat on the mat.",
    "The cat is sitting on the mat.",
    "A dog sat on the rug.",
    "Transformers process all tokens of a sentence in parallel using self-attention, which lets \
     them model long-range dependencies better than recurrent networks.",
    "In 1969, Neil Armstrong and Buzz Aldrin became the first people to walk on the Moon, while \
     Michael Collins orbited above in the command module.",
    "Customer reports that the application crashes on startup after the latest update; \
     reinstalling did not help and the log shows a null pointer exception in the renderer.",
    "lorem ipsum dolor sit amet consectetur adipiscing elit",
    "HTTP 503 Service Unavailable",
    "The meeting has been moved to Thursday at 10:30 in room B.",
    "The river rises in the northern hills, where snowmelt feeds a dozen small streams that join \
     below the old stone bridge. From there it runs south through farmland for nearly two \
     hundred kilometres, turning the wheels of mills that have stood since the fourteenth \
     century, before it widens into a slow, brown estuary. Fishermen still work the lower \
     reaches in flat-bottomed boats, although the catch has fallen by half since the 1980s, \
     and the regional council now pays farmers to plant hedges along the banks to hold the \
     soil in place during the winter floods.",
    "Release notes, version 4.2.0: the scheduler now balances work across NUMA nodes and pins \
     each worker to the cores of its node; memory for model weights is allocated once per node \
     and shared by every stream on it. The HTTP server answers 429 with a Retry-After header \
     when its queue is full, instead of closing the connection. Breaking change: the \
     configuration key max_batch_size is renamed to max_batch, and values above 4096 are \
     rejected at startup. Known issue: on kernels older than 4.15 the CPU quota of a cgroup v1 \
     container is not detected, so the service starts one stream per visible CPU. Upgrade \
     notes: stop the service, replace the binary, run the migration with --dry-run first, then \
     for real, and start it again; the on-disk cache format is unchanged.",
];

/// Queries, each with candidate documents in no particular order, for rerankers: the gate
/// compares how each file ranks a query's documents (each pair scored alone).
pub const RERANK: [(&str, [&str; 5]); 10] = [
    (
        "What is the capital of France?",
        [
            "Paris is the capital and most populous city of France.",
            "Berlin is the capital of Germany.",
            "France is known for its wine and cheese.",
            "The Eiffel Tower was completed in 1889.",
            "Tokyo is the largest city in Japan.",
        ],
    ),
    (
        "How do I reset my password?",
        [
            "Click 'Forgot password' on the sign-in page and follow the link we email you.",
            "Passwords must be at least twelve characters long.",
            "Our office is closed on public holidays.",
            "To change your email address, open Settings and choose Account.",
            "Two-factor authentication adds a second step when you sign in.",
        ],
    ),
    (
        "symptoms of the flu",
        [
            "Influenza typically causes fever, cough, sore throat, muscle aches and fatigue.",
            "The flu vaccine is updated every year.",
            "A broken bone usually needs a cast for six weeks.",
            "Wash your hands often to avoid catching colds.",
            "Bird migration peaks in autumn.",
        ],
    ),
    (
        "best way to learn a programming language",
        [
            "Write small programs every day and read other people's code.",
            "Rust has a strict compiler that catches many bugs.",
            "The history of COBOL goes back to 1959.",
            "Keyboards with mechanical switches are popular with programmers.",
            "Online courses and exercises help beginners practise.",
        ],
    ),
    (
        "OK",
        [
            "OK",
            "Okay, sounds good.",
            "Not at all.",
            "The weather is fine.",
            "Thanks!!!",
        ],
    ),
    (
        "Wie spät ist es?",
        [
            "Es ist halb drei.",
            "Der Zug fährt um acht Uhr ab.",
            "Ich habe keinen Hunger.",
            "What time is it?",
            "Die Katze schläft auf dem Sofa.",
        ],
    ),
    (
        "price of the invoice",
        [
            "The invoice total is $1,234.56, due on 2024-03-15.",
            "Invoices are sent at the end of each month.",
            "Call me at 555-0123 after 6 pm.",
            "Prices rose by three percent last year.",
            "The meeting has been moved to Thursday at 10:30 in room B.",
        ],
    ),
    (
        "why does my app crash on startup",
        [
            "Customer reports that the application crashes on startup after the latest update.",
            "The app starts faster since version 2.0.",
            "Crash reports are sent to our servers if you allow it.",
            "Our startup raised its first round of funding.",
            "Restarting the phone fixes many problems.",
        ],
    ),
    (
        "animals that live in the rainforest",
        [
            "Researchers discovered a new species of frog in the Amazon rainforest.",
            "Jaguars, sloths and toucans live in tropical forests.",
            "Polar bears hunt seals on the sea ice.",
            "Rainforests cover about six percent of the Earth's land.",
            "The desert gets less than 250 mm of rain a year.",
        ],
    ),
    (
        "how to cook rice",
        [
            "Rinse one cup of rice, add two cups of water, bring to a boil and simmer for 18 minutes.",
            "Rice is a staple food in much of Asia.",
            "The recipe calls for two cups of flour, one egg and a pinch of salt.",
            "Boil pasta in salted water for ten minutes.",
            "Rice fields need a lot of water.",
        ],
    ),
];
