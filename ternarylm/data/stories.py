"""Synthetic children's stories generated in code, so smoke runs and tests need no download.

For smoke runs and tests only, not a real corpus: the stories come from a few dozen templates
(characters, places, objects, ten plots with dialogue and a moral): enough structure for a small
model to learn something non-trivial (names agree with pronouns, quotes open and close, a plot's
problem comes before its resolution) and nothing more. The same ``(n_stories, seed)`` gives the
same text on every machine: only Python's ``random.Random`` is used. Paragraphs inside a story
are separated by one newline, so stories written to a ``.txt`` file with blank lines between them
read back (``iter_documents``) as the same documents.
"""

from __future__ import annotations

import random

# About 540 characters per story: 5000 stories give roughly 2.7M characters.
DEFAULT_STORIES = 5000

# (name, pronoun set)
NAMES = [
    ("Lily", "she"), ("Tom", "he"), ("Mia", "she"), ("Ben", "he"), ("Sara", "she"),
    ("Max", "he"), ("Anna", "she"), ("Sam", "he"), ("Lucy", "she"), ("Jack", "he"),
    ("Emma", "she"), ("Leo", "he"), ("Zoe", "she"), ("Finn", "he"), ("Ella", "she"),
    ("Noah", "he"), ("Ruby", "she"), ("Oscar", "he"), ("Grace", "she"), ("Theo", "he"),
    ("Ivy", "she"), ("Hugo", "he"), ("Rosa", "she"), ("Eli", "he"), ("Nora", "she"),
    ("Milo", "he"), ("Maya", "she"), ("Jake", "he"), ("Daisy", "she"), ("Otto", "he"),
    ("Pia", "she"), ("Luke", "he"), ("Hazel", "she"), ("Arlo", "he"), ("Clara", "she"),
    ("Felix", "he"), ("Molly", "she"), ("Timmy", "he"), ("Ada", "she"), ("Bruno", "he"),
    ("Kira", "she"), ("Omar", "he"), ("Luna", "she"), ("Pip", "he"), ("Tessa", "she"),
    ("Ravi", "he"), ("Wren", "she"), ("Jonah", "he"), ("Poppy", "she"), ("Sid", "he"),
]
PRONOUNS = {"he": ("he", "his", "him"), "she": ("she", "her", "her")}
KINDS = [
    "bunny", "fox", "bear", "cat", "dog", "robin", "duck", "mouse", "frog", "turtle", "squirrel",
    "deer", "lamb", "pig", "pony", "bird", "hedgehog", "puppy", "kitten", "goat", "girl", "boy",
    "badger",
]
ADJECTIVES = [
    "kind", "shy", "brave", "curious", "clever", "silly", "happy", "sleepy", "gentle", "little",
    "playful", "quiet", "cheerful", "busy",
]
PLACES = [
    "a small house by the river", "the big green forest", "a quiet village", "a farm on a hill",
    "a cozy burrow under a tree", "a cottage by the sea", "a garden full of flowers",
    "a busy little town", "a nest high in an old oak", "a sunny meadow", "a red barn",
    "a house at the end of the lane", "a valley between two hills", "a park in the city",
    "a hut near the lake", "a log cabin in the woods",
]
OBJECTS = [
    "red ball", "shiny stone", "blue kite", "treasure map", "little boat", "golden key",
    "wooden box", "soft blanket", "tiny bell", "big apple", "white feather", "toy drum",
    "book of songs", "basket of berries", "toy train", "paper star", "green hat", "jar of buttons",
    "yellow umbrella", "glass marble", "kite with a long tail", "teddy bear", "wooden spoon",
    "silver whistle", "box of crayons", "pair of boots", "spotted scarf", "pinecone", "seashell",
    "lantern",
]
SPOTS = [
    "by the pond", "under the old oak tree", "behind the barn", "next to the big rock",
    "in the tall grass", "on the sandy beach", "near the bridge", "at the top of the hill",
    "beside the garden gate", "under a pile of leaves", "in the old shed", "by the well",
]
TIMES = [
    "morning", "sunny day", "rainy afternoon", "windy evening", "snowy morning", "warm summer day",
    "cold winter day", "bright spring morning", "foggy day", "quiet Sunday",
]
ACTIVITIES = [
    "play in the mud", "sing songs", "paint pictures", "climb trees", "read books",
    "dance in the rain", "build towers of blocks", "look at the stars", "pick flowers",
    "run very fast", "bake cookies", "swim in the pond", "fly kites", "collect pretty stones",
    "tell jokes", "play hide and seek",
]
FOODS = ["apples", "carrots", "honey", "cookies", "berries", "bread", "cheese", "soup", "pie",
         "pancakes"]
ELDERS = ["mom", "dad", "grandma", "grandpa", "big sister", "big brother", "aunt"]
MALE_ELDERS = ("dad", "grandpa", "big brother")
SAID = ["said", "cried", "called out", "whispered"]  # verbs that fit every line they are used in

OPENINGS = [
    "Once upon a time, there was a {adj} {kind} named {name}.",
    "There once was a {adj} {kind} called {name}.",
    "{name} was a {adj} {kind} who lived in {place}.",
    "Long ago, in {place}, lived a {adj} {kind} named {name}.",
    "Once there was a {kind} named {name}. {He} was very {adj}.",
    "In {place}, there lived a {kind}. {His} name was {name}.",
]
SETTINGS = [
    "{He} lived in {place} with {his} {elder}.",
    "{name} loved to {activity} more than anything.",
    "Every day, {name} liked to {activity} with {his} {elder}.",
    "{His} favorite thing to eat was {food}.",
    "{name} had a {object} that {he} loved very much.",
    "All the animals in {place} knew {name}, because {he} liked to {activity}.",
]
# Every intro brings in the friend, whom the plots then use.
INTROS = [
    "One {time}, {name} went outside to {activity} with {his} friend {friend} the {fkind}.",
    "One {time}, {name} and {friend}, a {fadj} {fkind}, went to play {spot}.",
    "On a {time}, {name} met {friend}, a {fadj} {fkind}.",
    "One {time}, {his} friend {friend} the {fkind} came to visit.",
    'It was a {time}. "Good morning, {name}!" called {friend} the {fkind}.',
    "One {time}, {name} brought {his} {object} to show {friend}, a {fadj} {fkind}.",
]

# Each plot: (problems, middles, resolutions, morals), each a list of variants. One problem, one or
# two middles in listed order, one resolution and one moral make the plot of a story.
PLOTS = {
    "lost": (
        ["{name} looked for {his} {object}, but it was gone!",
         "Oh no! {name} could not find {his} {object} anywhere."],
        ['"Where is my {object}?" {name} {said}. {He} felt very sad.',
         '"Can you help me find my {object}?" {name} asked {friend}. "Of course!" said {friend}.',
         "{name} and {friend} looked {spot} and {spot2}, but it was not there."],
        ["At last, {friend} saw something {spot2}. It was the {object}!",
         'Then {friend} shouted, "I found it!" The {object} was {spot2} all along.'],
        ["friends help each other when things go wrong", "you should never give up",
         "it is good to ask for help"],
    ),
    "share": (
        ['{friend} saw the {object} and said, "Can I play with it too?"',
         "{friend} wanted to play with {name}'s {object}."],
        ['"No, it is mine!" {name} {said}. {friend} was sad and walked away.',
         "{name} held the {object} tight. {He} did not want to share."],
        ['Then {name} felt bad. "Here, we can play together," {he} said. {friend} smiled.',
         "After a while, {name} gave the {object} to {friend}. They played together all day."],
        ["sharing makes fun bigger", "playing together is better than playing alone",
         "a friend is worth more than a toy"],
    ),
    "fear": (
        ["That night, {name} heard a strange noise {spot}.",
         "Suddenly, the sky grew dark and there was a loud boom of thunder."],
        ['"I am scared," {name} {said}. {He} hid under {his} {object}.',
         '"What was that?" {name} whispered. {His} {elder} held {his} hand.'],
        ['{His} {elder} looked outside and laughed. "It is only the wind," {ehe} said.',
         ("Then {name} was brave and looked. It was only {friend} the {fkind}, looking for a "
          "place to sleep.")],
        ["things are less scary when you are brave",
         "it is good to tell someone when you are afraid",
         "the dark is not so scary with a friend"],
    ),
    "broken": (
        ["{name} was playing with the {object} when it fell and broke!",
         "Crack! The {object} broke into two pieces."],
        ['{name} was afraid. "Will {elder} be angry?" {he} thought.',
         "{name} wanted to hide the broken {object} {spot}."],
        [('But {name} told the truth. "I broke it. I am sorry," {he} said. {His} {elder} gave '
          "{him} a hug, and together they fixed it."),
         ('{name} went to {his} {elder} and said, "I am sorry, it was me." {His} {elder} smiled '
          'and said, "Thank you for telling me."')],
        ["telling the truth is always best", "it is brave to say sorry",
         "honesty makes hearts light"],
    ),
    "help": (
        ["{friend} the {fkind} was stuck {spot} and could not get out.",
         "{friend} had hurt {fhis} leg and could not walk home."],
        ['"Help me, please!" {friend} {said}. {name} ran to {fhim} as fast as {he} could.',
         "{name} saw that {friend} was crying. {He} wanted to help."],
        ["{name} used {his} {object} to help, and soon {friend} was free.",
         ("{name} walked slowly with {friend} all the way home. {friend} said thank you again "
          "and again.")],
        ["being kind is the best thing you can do", "helping others makes you happy too",
         "a good friend is there when you need one"],
    ),
    "race": (
        ['{friend} said, "Let us race to the hill!" {name} said yes.',
         '"I am faster than you," {friend} {said}. "Let us race," said {name}.'],
        ["{friend} ran very fast, but then {fhe} stopped to rest and fell asleep.",
         "{name} was slow, but {he} did not stop. {He} kept going, step by step."],
        ['In the end, {name} reached the hill first. {friend} laughed and said, "You won!"',
         "{name} came first, and then {he} waited for {friend}. They sat together and ate {food}."],
        ["slow and steady wins the race", "you should never stop trying",
         "winning is more fun with a friend"],
    ),
    "newfriend": (
        ["A new {fkind} named {friend} came to {place}.",
         "One day, a shy {fkind} moved in next door."],
        ["{friend} did not know anyone. {Fhe} sat alone {spot}.",
         'Nobody played with {friend}. "Maybe they do not like me," {fhe} thought.'],
        [('{name} walked over and said, "Hello! Do you want to {activity} with me?" {friend} '
          "smiled a big smile."),
         "{name} shared {his} {food} with {friend}. Soon they were best friends."],
        ["a kind word can make a new friend", "everyone needs a friend",
         "it is good to be welcoming"],
    ),
    "bake": (
        ['"Let us make a pie with {food}!" {name} said to {friend}.',
         "{name} and {friend} wanted to bake something for {his} {elder}."],
        ["They put flour everywhere. Soon the kitchen was a big mess!",
         "{friend} dropped the bowl, and {food} rolled all over the floor."],
        ["They laughed and cleaned up together. The pie was warm and sweet.",
         "{His} {elder} helped them, and in the end they made the best pie ever."],
        ["working together makes hard jobs easy", "a mess is fine if you clean it up together",
         "making things for others is fun"],
    ),
    "rain": (
        ["{name} and {friend} planned a picnic {spot}, but then it started to rain.",
         "The sun went away, and big drops of rain began to fall."],
        ['"Now we cannot play outside," {name} {said}. {He} was sad.',
         "{friend} looked at the rain and sighed."],
        ["So they built a fort with a {object} and had the picnic inside. It was so much fun!",
         "Then they put on boots and jumped in the puddles. They laughed and laughed."],
        ["you can have fun on any day", "make the best of what you have",
         "a rainy day can be a happy day"],
    ),
    "gift": (
        ["It was {his} {elder}'s birthday, and {name} had no present.",
         "{name} wanted to give {his} {elder} a gift, but {he} had no money."],
        ["{He} thought and thought. Then {he} had an idea!",
         '"What can I give?" {name} asked {friend}. "Make something," said {friend}.'],
        [("{name} made a card with a picture of a {object}. {His} {elder} said, "
          '"This is the best gift of all!"'),
         ("{name} picked flowers {spot} and gave them to {his} {elder}, who smiled and gave {him} "
          "a big hug.")],
        ["the best gifts come from the heart", "love matters more than money",
         "a small gift made with care is a big gift"],
    ),
}
MORALS = [
    "From that day on, {name} knew that {moral}.",
    "{name} learned that {moral}.",
    "And so {name} learned an important lesson: {moral}.",
    '"I know now that {moral}," {name} said with a smile.',
]
ENDINGS = [
    "", "The end.", "That night, {name} went to bed with a happy heart.",
    "And {name} and {friend} stayed friends forever.", "{name} smiled and went home to eat {food}.",
]


def synthetic_stories(n_stories: int, seed: int = 0) -> list[str]:
    """``n_stories`` stories, the same for the same ``seed``; ``DEFAULT_STORIES`` is ~2.7M chars."""
    rng = random.Random(seed)
    return [_story(rng) for _ in range(n_stories)]


def _story(rng: random.Random) -> str:
    """Three paragraphs: opening and setting; intro, problem, middle, resolution; moral, ending."""
    (name, gender), (friend, fgender) = rng.sample(NAMES, 2)
    he, his, him = PRONOUNS[gender]
    fhe, fhis, fhim = PRONOUNS[fgender]
    spot, spot2 = rng.sample(SPOTS, 2)
    elder = rng.choice(ELDERS)
    slots = {
        "name": name, "he": he, "his": his, "him": him, "He": he.capitalize(),
        "His": his.capitalize(), "friend": friend, "fhe": fhe, "fhis": fhis, "fhim": fhim,
        "Fhe": fhe.capitalize(), "kind": rng.choice(KINDS), "fkind": rng.choice(KINDS),
        "adj": rng.choice(ADJECTIVES), "fadj": rng.choice(ADJECTIVES), "place": rng.choice(PLACES),
        "object": rng.choice(OBJECTS), "spot": spot, "spot2": spot2, "time": rng.choice(TIMES),
        "activity": rng.choice(ACTIVITIES), "food": rng.choice(FOODS), "elder": elder,
        "ehe": "he" if elder in MALE_ELDERS else "she", "said": rng.choice(SAID),
    }
    problems, middles, resolutions, morals = PLOTS[rng.choice(sorted(PLOTS))]
    slots["moral"] = rng.choice(morals)
    opening = [rng.choice(OPENINGS), *rng.sample(SETTINGS, rng.randint(1, 2))]
    plot = [rng.choice(INTROS), rng.choice(problems), *_ordered_sample(rng, middles),
            rng.choice(resolutions)]
    ending = [rng.choice(MORALS), rng.choice(ENDINGS)]
    parts = (opening, plot, ending)
    return "\n".join(" ".join(s.format(**slots) for s in part if s).strip() for part in parts)


def _ordered_sample(rng: random.Random, options: list[str]) -> list[str]:
    """One or two of ``options`` in their listed order (a plot's middle steps follow each other)."""
    keep = sorted(rng.sample(range(len(options)), rng.randint(1, min(2, len(options)))))
    return [options[i] for i in keep]
