//! The product grammar and review phrases of the synthetic generator (All_Beauty-like).

/// Product families decide which "target" attribute an item can have.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    Hair,
    Skin,
    Body,
    Nails,
    Makeup,
    Fragrance,
    Shave,
}

pub const PRODUCT_TYPES: &[(&str, Family)] = &[
    ("shampoo", Family::Hair),
    ("conditioner", Family::Hair),
    ("hair mask", Family::Hair),
    ("hair oil", Family::Hair),
    ("leave-in conditioner", Family::Hair),
    ("dry shampoo", Family::Hair),
    ("curl cream", Family::Hair),
    ("hair serum", Family::Hair),
    ("hair spray", Family::Hair),
    ("face moisturizer", Family::Skin),
    ("facial cleanser", Family::Skin),
    ("eye cream", Family::Skin),
    ("face serum", Family::Skin),
    ("sunscreen", Family::Skin),
    ("toner", Family::Skin),
    ("sheet mask", Family::Skin),
    ("exfoliating scrub", Family::Skin),
    ("night cream", Family::Skin),
    ("body lotion", Family::Body),
    ("body wash", Family::Body),
    ("hand cream", Family::Body),
    ("body butter", Family::Body),
    ("deodorant", Family::Body),
    ("bath bomb", Family::Body),
    ("foot cream", Family::Body),
    ("nail polish", Family::Nails),
    ("cuticle oil", Family::Nails),
    ("nail strengthener", Family::Nails),
    ("mascara", Family::Makeup),
    ("foundation", Family::Makeup),
    ("lipstick", Family::Makeup),
    ("lip balm", Family::Makeup),
    ("eyeliner", Family::Makeup),
    ("makeup remover", Family::Makeup),
    ("concealer", Family::Makeup),
    ("eau de parfum", Family::Fragrance),
    ("body mist", Family::Fragrance),
    ("cologne", Family::Fragrance),
    ("shaving cream", Family::Shave),
    ("after shave", Family::Shave),
    ("beard oil", Family::Shave),
];

pub const HAIR_TYPES: &[&str] = &[
    "curly hair",
    "thin hair",
    "color-treated hair",
    "dry hair",
    "oily scalp",
    "frizzy hair",
    "thick hair",
];
pub const SKIN_TYPES: &[&str] = &[
    "dry skin",
    "oily skin",
    "sensitive skin",
    "combination skin",
    "acne-prone skin",
    "mature skin",
];
pub const SCENTS: &[&str] = &[
    "lavender",
    "coconut",
    "vanilla",
    "rose",
    "citrus",
    "eucalyptus",
    "tea tree",
    "cucumber",
    "almond",
    "sandalwood",
    "peppermint",
    "jasmine",
    "green tea",
    "unscented",
];
pub const INGREDIENTS: &[&str] = &[
    "argan oil",
    "shea butter",
    "hyaluronic acid",
    "vitamin c",
    "retinol",
    "aloe vera",
    "collagen",
    "keratin",
    "jojoba oil",
    "charcoal",
    "salicylic acid",
    "niacinamide",
    "biotin",
    "rosehip oil",
];
pub const AUDIENCES: &[&str] = &["women", "men", "kids", "teens", "unisex", "babies"];
pub const SIZES: &[&str] = &[
    "1 fl oz",
    "1.7 oz",
    "3.4 fl oz",
    "8 fl oz",
    "12 oz",
    "16.9 fl oz",
    "50 ml",
    "100 ml",
    "2 pack",
];
pub const FORMS: &[&str] = &[
    "Liquid", "Cream", "Gel", "Oil", "Lotion", "Balm", "Spray", "Powder", "Stick",
];
pub const SYLLABLES: &[&str] = &[
    "ve", "lo", "ra", "mi", "sa", "no", "ka", "lu", "ze", "ta", "ri", "bel", "mor", "lin", "qua",
    "sol", "dra", "fen", "vi", "ol", "na", "cor", "el", "ly",
];
pub const BRAND_SUFFIXES: &[&str] = &[
    "",
    "",
    "",
    " Naturals",
    " Beauty",
    " Labs",
    " & Co",
    " Botanics",
];

/// Who / when / why context: (phrase put in the text, kind). The phrase is the ground truth.
pub const WHO: &[&str] = &[
    "daughter",
    "husband",
    "wife",
    "mom",
    "teenage son",
    "grandmother",
    "girlfriend",
    "sister",
    "toddler",
];
pub const WHEN: &[&str] = &[
    "after the gym",
    "before bed",
    "every morning",
    "after shaving",
    "in the winter",
    "on vacation",
    "after swimming",
    "after showering",
];
pub const WHY: &[&str] = &[
    "dry winter skin",
    "thin hair",
    "frizz",
    "dandruff",
    "sunburn",
    "razor bumps",
    "dark circles",
    "eczema",
    "hair loss",
    "a birthday gift",
];
pub const WHO_TEMPLATES: &[&str] = &[
    "I bought this for my {v}.",
    "Got it for my {v} and",
    "My {v} uses it daily.",
    "Ordered one for my {v}.",
];
pub const WHEN_TEMPLATES: &[&str] = &[
    "I use it {v}.",
    "Perfect {v}.",
    "I put it on {v}.",
    "Great to use {v}.",
];
pub const WHY_TEMPLATES: &[&str] = &[
    "I needed something for {v}.",
    "It helps with my {v}.",
    "Bought it because of {v}.",
    "I was looking for a fix for {v}.",
];

/// Paraphrases that mention an attribute value `{v}`: (positive, negative) templates.
pub const SCENT_POS: &[&str] = &[
    "The {v} smell is lovely.",
    "Smells like fresh {v}.",
    "Love the {v} scent.",
    "The {v} fragrance is subtle.",
];
pub const SCENT_NEG: &[&str] = &[
    "The {v} smell is way too strong.",
    "Did not like the {v} scent at all.",
];
pub const TARGET_POS: &[&str] = &[
    "Works great on my {v}.",
    "I have {v} and this is perfect.",
    "Finally something for {v}.",
    "My {v} loves it.",
];
pub const TARGET_NEG: &[&str] = &["Made my {v} worse.", "Not good for {v} in my experience."];
pub const INGREDIENT_POS: &[&str] = &[
    "You can tell the {v} works.",
    "The {v} makes a real difference.",
    "Glad it has {v} in it.",
];
pub const INGREDIENT_NEG: &[&str] = &["The {v} did nothing for me.", "Expected more from the {v}."];
pub const TYPE_POS: &[&str] = &[
    "Best {v} I have tried.",
    "This {v} is my new favorite.",
    "A really nice {v}.",
];
pub const TYPE_NEG: &[&str] = &["Worst {v} I have bought.", "This {v} was a letdown."];
pub const BRAND_POS: &[&str] = &["{v} never disappoints.", "Another winner from {v}."];
pub const BRAND_NEG: &[&str] = &["Usually like {v} but not this one."];

pub const SENTIMENT_POS: &[&str] = &[
    "Highly recommend.",
    "Will buy again.",
    "Works great.",
    "Love it!",
    "Exactly as described.",
    "Great value.",
];
pub const SENTIMENT_MID: &[&str] = &[
    "It's okay.",
    "Not bad but not great.",
    "Does the job.",
    "Average at best.",
];
pub const SENTIMENT_NEG: &[&str] = &[
    "Very disappointed.",
    "Would not buy again.",
    "Waste of money.",
    "Returned it.",
    "Broke me out.",
];
pub const TITLES_POS: &[&str] = &[
    "Five Stars",
    "Love it",
    "Amazing",
    "Great product",
    "Holy grail",
    "Works!",
];
pub const TITLES_MID: &[&str] = &["Three Stars", "Okay", "Meh", "Not bad"];
pub const TITLES_NEG: &[&str] = &[
    "One Star",
    "Waste of money",
    "Terrible",
    "Disappointed",
    "Do not buy",
];
pub const FILLER: &[&str] = &[
    "Arrived quickly.",
    "The bottle is a good size.",
    "A little goes a long way.",
    "Packaging was nice.",
    "I have used it for two weeks.",
    "Texture is light.",
];
